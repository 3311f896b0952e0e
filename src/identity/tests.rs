//! Tests for the identity module: every algorithm family round-trips, every bad token is
//! refused with the right reason, and the SPEC §3 precedence holds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::*;

const RSA1: &str = include_str!("testdata/rsa1.pem");
const RSA1_PUB: &str = include_str!("testdata/rsa1.pub.pem");
const RSA1_PKCS1_PUB: &str = include_str!("testdata/rsa1.pkcs1.pub.pem");
const RSA2_PKCS1: &str = include_str!("testdata/rsa2.pkcs1.pem");
const ED1: &str = include_str!("testdata/ed1.pem");
const ED1_PUB: &str = include_str!("testdata/ed1.pub.pem");
const P521_SEC1: &str = include_str!("testdata/p521sec1.pem");
const P521_PUB: &str = include_str!("testdata/p521.pub.pem");
const P521_OPENSSL_JWT: &str = include_str!("testdata/p521-openssl.jwt");
/// From the gm-data tutorial (seeds/004): a real gm-jwt-security token, long expired.
const SEED_TOKEN: &str = "eyJhbGciOiJFUzUxMiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE1NTAxODI4MDMsImxhYmVsIjoiYXNSb290IiwidmFsdWVzIjp7InByaXZpbGVnZSI6WyJyb290Il19fQ.AXckbmNH0HVwuixpLPsj5AJR_cztOkQn0Ltju1klz1MaMu14Keg28R__4sUSSLJYQEKTtE8HfSwcpjnOWFKnW03YAI_XY4l5ZEAo7hjuNA5oQQN1wPPShGrG8tUpFAOSZNuyLJ4SfgHgUW_-Fk1kYhbGDZAkaZL8295wRQkJjvvvvwsT";
const HOUR: Duration = Duration::from_secs(3600);
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));

// ------------------------------------------------------------------ helpers

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64url(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn p256_signer() -> TokenSigner {
    let pem = p256::SecretKey::random(&mut OsRng)
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    TokenSigner::from_pem(&pem).unwrap()
}

fn p384_signer() -> TokenSigner {
    let pem = p384::SecretKey::random(&mut OsRng)
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    TokenSigner::from_pem(&pem).unwrap()
}

/// SEC1 "EC PRIVATE KEY", the form `openssl ecparam -genkey` writes.
fn p521_signer() -> TokenSigner {
    let pem = p521::SecretKey::random(&mut OsRng)
        .to_sec1_pem(LineEnding::LF)
        .unwrap();
    TokenSigner::from_pem(&pem).unwrap()
}

/// A fresh Ed25519 key: PKCS#8 for Ed25519 is a fixed 16-byte prefix and the 32-byte seed
/// (RFC 8410 §7), so no extra crate is needed to make one.
fn ed25519_signer() -> TokenSigner {
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    der.extend_from_slice(&seed);
    let pem = p256::pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &der).unwrap();
    TokenSigner::from_pem(&pem).unwrap()
}

fn rsa_signer() -> TokenSigner {
    TokenSigner::from_pem(RSA1).unwrap()
}

fn hmac_signer(alg: &str) -> TokenSigner {
    TokenSigner::hmac(b"a-test-secret-that-is-long-enough-for-hs512", alg).unwrap()
}

fn hmac_config() -> IdentityConfig {
    IdentityConfig {
        jwt_secret: Some("a-test-secret-that-is-long-enough-for-hs512".into()),
        ..IdentityConfig::default()
    }
}

/// `JWT_PUB` exactly as gm-data takes it: base64 of the PEM.
fn config_for(signer: &TokenSigner) -> IdentityConfig {
    match signer.jwt_pub() {
        Some(jwt_pub) => IdentityConfig {
            jwt_pub: Some(jwt_pub),
            ..IdentityConfig::default()
        },
        None => hmac_config(),
    }
}

fn auth_for(signer: &TokenSigner) -> Authenticator {
    Authenticator::from_config(&config_for(signer)).unwrap()
}

fn claims(label: &str) -> Value {
    json!({"label": label, "values": {"email": [format!("{label}@example.com")]}})
}

fn header(token: &str) -> Credentials<'_> {
    Credentials {
        userpolicy_header: Some(token),
        ..Credentials::none(REMOTE)
    }
}

fn token_err(auth: &Authenticator, token: &str) -> TokenError {
    match auth.authenticate(&header(token)) {
        Err(AuthError::Token { place, reason }) => {
            assert_eq!(place, CredentialPlace::Header);
            let msg = AuthError::Token {
                place,
                reason: reason.clone(),
            }
            .to_string();
            // Neither the token nor its signature may leak into the message.
            if let Some(sig) = token.rsplit('.').next().filter(|s| s.len() > 8) {
                assert!(!msg.contains(sig), "message leaks the signature: {msg}");
            }
            reason
        }
        other => panic!("expected a token error, got {other:?}"),
    }
}

fn assert_accepts(auth: &Authenticator, token: &str, label: &str) -> Identity {
    let id = auth
        .authenticate(&header(token))
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(id.kind, IdentityKind::Jwt);
    assert_eq!(id.claims.label(), label);
    assert_eq!(id.jwthash, hex::encode(Sha256::digest(token.as_bytes())));
    id
}

fn users_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("users.json");
    std::fs::write(
        &path,
        json!({"users": [
            {"label": "CN=jane.doe,OU=people,O=acme", "values": {"email": ["jane@acme.test"], "org": ["acme"]}},
            {"label": "CN=bob, OU=people, O=acme", "values": {"email": ["bob@acme.test"]}},
        ]})
        .to_string(),
    )
    .unwrap();
    path
}

fn dn_auth(dir: &std::path::Path) -> Authenticator {
    Authenticator::from_config(&IdentityConfig {
        users_file: Some(users_file(dir)),
        ..hmac_config()
    })
    .unwrap()
}

fn dn_creds(dn: &str, peer: IpAddr) -> Credentials<'_> {
    Credentials {
        user_dn: Some(dn),
        ..Credentials::none(peer)
    }
}

/// A token with a hand-made header and no valid signature.
fn raw_token(header: Value, claims: Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        b64url(header.to_string()),
        b64url(claims.to_string())
    )
}

// ------------------------------------------------------- round trips

#[test]
fn es256_round_trip() {
    let s = p256_signer();
    assert_eq!(s.algorithm(), "ES256");
    let auth = auth_for(&s);
    assert_eq!(auth.algorithms(), ["ES256"]);
    assert_accepts(&auth, &s.sign(&claims("es256"), HOUR).unwrap(), "es256");
}

#[test]
fn es384_round_trip() {
    let s = p384_signer();
    assert_eq!(s.algorithm(), "ES384");
    let auth = auth_for(&s);
    assert_eq!(auth.algorithms(), ["ES384"]);
    assert_accepts(&auth, &s.sign(&claims("es384"), HOUR).unwrap(), "es384");
}

#[test]
fn es512_round_trip() {
    let s = p521_signer();
    assert_eq!(s.algorithm(), "ES512");
    let auth = auth_for(&s);
    assert_eq!(auth.algorithms(), ["ES512"]);
    assert_accepts(&auth, &s.sign(&claims("es512"), HOUR).unwrap(), "es512");
}

#[test]
fn rsa_round_trips_for_every_rs_and_ps_algorithm() {
    let auth = auth_for(&rsa_signer());
    assert_eq!(
        auth.algorithms(),
        ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    );
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let s = rsa_signer().with_algorithm(alg).unwrap();
        assert_eq!(s.algorithm(), alg);
        assert_accepts(&auth, &s.sign(&claims(alg), HOUR).unwrap(), alg);
    }
}

#[test]
fn rsa_pkcs1_private_key_signs_too() {
    let s = TokenSigner::from_pem(RSA2_PKCS1).unwrap();
    assert_eq!(s.algorithm(), "RS256");
    assert_accepts(
        &auth_for(&s),
        &s.sign(&claims("pkcs1"), HOUR).unwrap(),
        "pkcs1",
    );
}

#[test]
fn eddsa_round_trip_with_fresh_and_openssl_keys() {
    for s in [ed25519_signer(), TokenSigner::from_pem(ED1).unwrap()] {
        assert_eq!(s.algorithm(), "EdDSA");
        let auth = auth_for(&s);
        assert_eq!(auth.algorithms(), ["EdDSA"]);
        assert_accepts(&auth, &s.sign(&claims("ed"), HOUR).unwrap(), "ed");
    }
}

#[test]
fn hmac_round_trips() {
    let auth = Authenticator::from_config(&hmac_config()).unwrap();
    assert_eq!(auth.algorithms(), ["HS256", "HS384", "HS512"]);
    assert_eq!(auth.key_kind(), KeyKind::Hmac);
    for alg in ["HS256", "HS384", "HS512"] {
        let s = hmac_signer(alg);
        assert_eq!(s.algorithm(), alg);
        assert!(s.public_pem().is_none());
        assert_accepts(&auth, &s.sign(&claims(alg), HOUR).unwrap(), alg);
    }
}

#[test]
fn es512_token_shaped_like_gm_data_verifies_with_base64_jwt_pub() {
    let s = p521_signer();
    let pem = s.public_pem().unwrap();
    let cfg = IdentityConfig {
        jwt_pub: Some(b64(&pem)),
        ..IdentityConfig::default()
    };
    let auth = Authenticator::from_config(&cfg).unwrap();
    let token = s
        .sign(
            &json!({"label": "asRoot", "values": {"privilege": ["root"]}}),
            HOUR,
        )
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let hdr: Value = serde_json::from_slice(&jwt::b64url(parts[0]).unwrap()).unwrap();
    assert_eq!(hdr, json!({"alg": "ES512", "typ": "JWT"}));
    assert_eq!(
        jwt::b64url(parts[2]).unwrap().len(),
        132,
        "R||S, 66 bytes each"
    );
    // Sent the way the tutorial sends it: as the userpolicy cookie.
    let id = auth
        .authenticate(&Credentials {
            userpolicy_cookie: Some(&token),
            ..Credentials::none(REMOTE)
        })
        .unwrap();
    assert_eq!(id.claims.label(), "asRoot");
    assert!(id
        .claims
        .has_privilege(crate::model::claims::Privilege::Root));
    assert!(id.claims.raw()["exp"].is_u64());
}

#[test]
fn es512_token_signed_by_openssl_verifies() {
    for jwt_pub in [
        P521_PUB.to_owned(),
        b64(P521_PUB),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/identity/testdata/p521.pub.pem"
        )
        .to_owned(),
    ] {
        let auth = Authenticator::from_config(&IdentityConfig {
            jwt_pub: Some(jwt_pub),
            ..IdentityConfig::default()
        })
        .unwrap();
        assert_accepts(&auth, P521_OPENSSL_JWT.trim(), "asRoot");
    }
}

#[test]
fn gm_data_seed_token_parses_and_fails_only_on_the_signature() {
    // We do not have the tutorial's key: the token must get as far as the signature check.
    assert_eq!(
        token_err(&auth_for(&p521_signer()), SEED_TOKEN),
        TokenError::BadSignature
    );
}

// -------------------------------------------------------------- rejections

#[test]
fn rejects_alg_none() {
    let auth = auth_for(&p256_signer());
    let body = json!({"label": "evil", "exp": now() + 3600, "values": {"privilege": ["root"]}});
    for alg in ["none", "None", "NONE", " none"] {
        for sig in ["", "AAAA"] {
            let t = raw_token(json!({"alg": alg, "typ": "JWT"}), body.clone(), sig);
            assert_eq!(token_err(&auth, &t), TokenError::AlgNone, "{alg:?}");
        }
    }
    let auth = Authenticator::from_config(&hmac_config()).unwrap();
    let t = raw_token(json!({"alg": "none"}), body, "");
    assert_eq!(token_err(&auth, &t), TokenError::AlgNone);
}

#[test]
fn rejects_hs256_signed_with_the_public_key_against_an_es_key() {
    let es = p256_signer();
    let auth = auth_for(&es);
    // The classic confusion attack: HMAC keyed with the server's public key text.
    for secret in [es.public_pem().unwrap(), es.jwt_pub().unwrap()] {
        let forged = TokenSigner::hmac(secret.as_bytes(), "HS256")
            .unwrap()
            .sign(&claims("forged"), HOUR)
            .unwrap();
        assert_eq!(
            token_err(&auth, &forged),
            TokenError::AlgNotAllowed {
                alg: "HS256".into(),
                allowed: "ES256".into()
            }
        );
    }
    let msg = token_err(
        &auth,
        &hmac_signer("HS256").sign(&claims("x"), HOUR).unwrap(),
    )
    .to_string();
    assert_eq!(msg, "token algorithm HS256 is not allowed (allowed: ES256)");
}

#[test]
fn rejects_other_algorithms_of_the_same_family_and_unknown_names() {
    // ES384 header against a P-256 key.
    let p384 = p384_signer();
    let auth = auth_for(&p256_signer());
    assert!(matches!(
        token_err(&auth, &p384.sign(&claims("x"), HOUR).unwrap()),
        TokenError::AlgNotAllowed { .. }
    ));
    // RSA narrowed to RS256: PS256 refused.
    let auth = Authenticator::from_config(&IdentityConfig {
        jwt_algorithms: Some(vec!["RS256".into()]),
        ..config_for(&rsa_signer())
    })
    .unwrap();
    assert_eq!(auth.algorithms(), ["RS256"]);
    let ps = rsa_signer().with_algorithm("PS256").unwrap();
    assert!(matches!(
        token_err(&auth, &ps.sign(&claims("x"), HOUR).unwrap()),
        TokenError::AlgNotAllowed { .. }
    ));
    // Algorithm names are case-sensitive in tokens, and junk is echoed only sanitised.
    let t = raw_token(json!({"alg": "es256"}), claims("x"), "AAAA");
    assert!(matches!(
        token_err(&auth_for(&p256_signer()), &t),
        TokenError::AlgNotAllowed { .. }
    ));
    let t = raw_token(
        json!({"alg": "<script>alert(1)</script>"}),
        claims("x"),
        "AAAA",
    );
    match token_err(&auth, &t) {
        TokenError::AlgNotAllowed { alg, .. } => assert!(!alg.contains('<'), "{alg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_tokens_signed_by_another_key_of_the_same_type() {
    let pairs: Vec<(TokenSigner, TokenSigner)> = vec![
        (p256_signer(), p256_signer()),
        (p384_signer(), p384_signer()),
        (p521_signer(), p521_signer()),
        (rsa_signer(), TokenSigner::from_pem(RSA2_PKCS1).unwrap()),
        (ed25519_signer(), ed25519_signer()),
    ];
    for (good, other) in pairs {
        let auth = auth_for(&good);
        let t = other.sign(&claims("x"), HOUR).unwrap();
        assert_eq!(
            token_err(&auth, &t),
            TokenError::BadSignature,
            "{}",
            good.algorithm()
        );
    }
    let auth = Authenticator::from_config(&hmac_config()).unwrap();
    let t = TokenSigner::hmac(b"another-secret", "HS256")
        .unwrap()
        .sign(&claims("x"), HOUR)
        .unwrap();
    assert_eq!(token_err(&auth, &t), TokenError::BadSignature);
}

#[test]
fn rejects_a_tampered_payload_and_a_truncated_signature() {
    let s = p521_signer();
    let auth = auth_for(&s);
    let t = s.sign(&claims("jane"), HOUR).unwrap();
    let parts: Vec<&str> = t.split('.').collect();
    let evil = b64url(json!({"label": "root", "exp": now() + 3600}).to_string());
    let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_eq!(token_err(&auth, &tampered), TokenError::BadSignature);
    let truncated = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..80]);
    assert_eq!(token_err(&auth, &truncated), TokenError::BadSignature);
}

#[test]
fn expiry_is_required_numeric_and_enforced_with_leeway() {
    for s in [p256_signer(), p521_signer(), hmac_signer("HS256")] {
        let auth = auth_for(&s);
        let sign = |c: Value| s.sign_exact(&c).unwrap();
        let t = sign(json!({"label": "x", "exp": now() - 60}));
        assert_eq!(token_err(&auth, &t), TokenError::Expired);
        assert_eq!(token_err(&auth, &t).to_string(), "token expired");
        // Within the 5 s leeway.
        assert_accepts(&auth, &sign(json!({"label": "x", "exp": now() - 2})), "x");
        assert_accepts(
            &auth,
            &sign(json!({"label": "x", "exp": (now() + 60) as f64 + 0.5})),
            "x",
        );

        let t = sign(json!({"label": "x", "exp": (now() + 3600).to_string()}));
        assert_eq!(token_err(&auth, &t), TokenError::NotANumber("exp"));
        assert_eq!(
            token_err(&auth, &t).to_string(),
            "token exp is not a number"
        );
        for bad in [Value::Null, json!(true), json!([1]), json!({"t": 1})] {
            let t = sign(json!({"label": "x", "exp": bad}));
            assert_eq!(token_err(&auth, &t), TokenError::NotANumber("exp"));
        }
        let t = sign(json!({"label": "x"}));
        assert_eq!(token_err(&auth, &t), TokenError::MissingExp);
    }
}

#[test]
fn an_identity_expires_when_its_token_stops_being_accepted() {
    let s = p256_signer();
    let auth = auth_for(&s);
    let exp = now() + 600;
    let id = assert_accepts(
        &auth,
        &s.sign_exact(&json!({"label": "x", "exp": exp})).unwrap(),
        "x",
    );
    // exp plus the 5 s leeway.
    let want = UNIX_EPOCH + Duration::from_secs(exp as u64 + 5);
    assert_eq!(id.expires, Some(want));
    // An exp the clock cannot represent is accepted as no expiry, never a panic.
    for far in [json!(1e19), json!(1e300), json!(u64::MAX)] {
        let t = s.sign_exact(&json!({"label": "x", "exp": far})).unwrap();
        assert_eq!(assert_accepts(&auth, &t, "x").expires, None, "{far}");
    }
    assert_eq!(Identity::anonymous().expires, None);
}

#[test]
fn nbf_in_the_future_is_refused_and_must_be_numeric() {
    let s = p256_signer();
    let auth = auth_for(&s);
    let exp = now() + 3600;
    let t = s
        .sign_exact(&json!({"exp": exp, "nbf": now() + 600}))
        .unwrap();
    assert_eq!(token_err(&auth, &t), TokenError::NotYetValid);
    let t = s
        .sign_exact(&json!({"exp": exp, "nbf": (now() + 600).to_string()}))
        .unwrap();
    assert_eq!(token_err(&auth, &t), TokenError::NotANumber("nbf"));
    let t = s
        .sign_exact(&json!({"exp": exp, "iat": "yesterday"}))
        .unwrap();
    assert_eq!(token_err(&auth, &t), TokenError::NotANumber("iat"));
    // Slightly ahead clocks are tolerated.
    let t = s
        .sign_exact(&json!({"label": "ok", "exp": exp, "nbf": now() + 2}))
        .unwrap();
    assert_accepts(&auth, &t, "ok");
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let s = p384_signer();
    let auth = Authenticator::from_config(&IdentityConfig {
        jwt_issuer: Some("https://jwt.acme.test".into()),
        jwt_audience: Some("vellum".into()),
        ..config_for(&s)
    })
    .unwrap();
    let with = |extra: Value| {
        let mut c = claims("x");
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s.sign(&c, HOUR).unwrap()
    };
    let iss = "https://jwt.acme.test";
    assert_accepts(&auth, &with(json!({"iss": iss, "aud": "vellum"})), "x");
    assert_accepts(
        &auth,
        &with(json!({"iss": iss, "aud": ["other", "vellum"]})),
        "x",
    );
    let cases = [
        (
            json!({"iss": "https://evil.test", "aud": "vellum"}),
            TokenError::WrongIssuer,
        ),
        (json!({"aud": "vellum"}), TokenError::WrongIssuer),
        (
            json!({"iss": iss, "aud": "other"}),
            TokenError::WrongAudience,
        ),
        (
            json!({"iss": iss, "aud": ["a", "b"]}),
            TokenError::WrongAudience,
        ),
        (json!({"iss": iss}), TokenError::WrongAudience),
    ];
    for (extra, want) in cases {
        assert_eq!(token_err(&auth, &with(extra.clone())), want, "{extra}");
    }
    // Not configured: not checked.
    assert_accepts(
        &auth_for(&s),
        &with(json!({"iss": "anyone", "aud": "anything"})),
        "x",
    );
}

#[test]
fn rejects_garbage() {
    let auth = auth_for(&p256_signer());
    let ok_header = b64url(r#"{"alg":"ES256"}"#);
    let cases = [
        "garbage".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        "!!!.###.$$$".to_owned(),
        "..".to_owned(),
        format!("{}.e30.AAAA", b64url("[1,2]")),
        format!("{}.e30.AAAA", b64url(r#"{"typ":"JWT"}"#)),
        format!("{}.e30.AAAA", b64url(r#"{"alg":256}"#)),
        format!("{ok_header}.e30.not*base64"),
        "Bearer x.y.z".to_owned(),
    ];
    for t in cases {
        assert!(
            matches!(token_err(&auth, &t), TokenError::Malformed(_)),
            "{t}: {:?}",
            token_err(&auth, &t)
        );
    }
    let huge = format!("{ok_header}.{}.AAAA", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(token_err(&auth, &huge), TokenError::TooLarge);
}

#[test]
fn a_signed_payload_that_is_not_an_object_is_malformed() {
    let s = hmac_signer("HS256");
    let auth = auth_for(&s);
    let t = s.sign_exact(&json!(["not", "an", "object"])).unwrap();
    assert!(matches!(token_err(&auth, &t), TokenError::Malformed(_)));
}

#[test]
fn header_keys_are_never_taken_from_the_token() {
    let good = p256_signer();
    let auth = auth_for(&good);
    let attacker = p256_signer();
    let attacker_pub = attacker.public_pem().unwrap();
    let mut hdr = Map::new();
    hdr.insert(
        "jwk".into(),
        json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
    );
    hdr.insert("jku".into(), json!("https://evil.test/jwks.json"));
    hdr.insert("x5u".into(), json!("https://evil.test/cert.pem"));
    hdr.insert("x5c".into(), json!([b64(attacker_pub)]));
    hdr.insert("kid".into(), json!("attacker"));
    let mut c = claims("evil");
    c["exp"] = json!(now() + 3600);
    let forged = attacker.sign_with_header(&hdr, &c).unwrap();
    assert_eq!(token_err(&auth, &forged), TokenError::BadSignature);
    // The same headers on a token our key signed change nothing.
    let fine = good.sign_with_header(&hdr, &c).unwrap();
    assert_accepts(&auth, &fine, "evil");
}

#[test]
fn crit_headers_are_refused() {
    let s = p256_signer();
    let mut hdr = Map::new();
    hdr.insert("crit".into(), json!(["b64"]));
    hdr.insert("b64".into(), json!(false));
    let mut c = claims("x");
    c["exp"] = json!(now() + 3600);
    let t = s.sign_with_header(&hdr, &c).unwrap();
    assert_eq!(token_err(&auth_for(&s), &t), TokenError::CriticalHeader);
}

// --------------------------------------------------------- precedence

#[test]
fn a_bad_header_token_fails_even_with_a_good_cookie() {
    let s = p256_signer();
    let auth = auth_for(&s);
    let good = s.sign(&claims("good"), HOUR).unwrap();
    let expired = s
        .sign_exact(&json!({"label": "old", "exp": now() - 600}))
        .unwrap();
    for bad in ["garbage", expired.as_str()] {
        let err = auth
            .authenticate(&Credentials {
                userpolicy_header: Some(bad),
                userpolicy_cookie: Some(&good),
                bearer: Some(&good),
                ..Credentials::none(REMOTE)
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Token {
                    place: CredentialPlace::Header,
                    ..
                }
            ),
            "{err}"
        );
    }
    let err = auth
        .authenticate(&Credentials {
            userpolicy_cookie: Some(&expired),
            bearer: Some(&good),
            ..Credentials::none(REMOTE)
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "token expired (userpolicy cookie)");
}

#[test]
fn precedence_is_header_then_cookie_then_bearer_then_user_dn() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dn_auth(dir.path());
    let s = hmac_signer("HS384");
    let [h, c, b] =
        ["from-header", "from-cookie", "from-bearer"].map(|l| s.sign(&claims(l), HOUR).unwrap());
    let dn = "CN=jane.doe,OU=people,O=acme";
    let label = |creds: Credentials| auth.authenticate(&creds).unwrap().claims.label().to_owned();
    let all = Credentials {
        userpolicy_header: Some(&h),
        userpolicy_cookie: Some(&c),
        bearer: Some(&b),
        user_dn: Some(dn),
        peer: LOCAL,
    };
    assert_eq!(label(all), "from-header");
    assert_eq!(
        label(Credentials {
            userpolicy_header: None,
            ..all
        }),
        "from-cookie"
    );
    assert_eq!(
        label(Credentials {
            userpolicy_header: None,
            userpolicy_cookie: None,
            ..all
        }),
        "from-bearer"
    );
    let dn_only = Credentials {
        userpolicy_header: None,
        userpolicy_cookie: None,
        bearer: None,
        ..all
    };
    let id = auth.authenticate(&dn_only).unwrap();
    assert_eq!(id.kind, IdentityKind::UserDn);
    assert_eq!(id.claims.label(), dn);
    assert!(id.claims.contains("email", "jane@acme.test"));
    // A JWT makes USER_DN irrelevant, even from an untrusted peer.
    let id = auth
        .authenticate(&Credentials {
            userpolicy_header: Some(&h),
            user_dn: Some(dn),
            ..Credentials::none(REMOTE)
        })
        .unwrap();
    assert_eq!(id.kind, IdentityKind::Jwt);
}

#[test]
fn bearer_prefix_cookie_quotes_and_empty_values_are_handled() {
    let s = hmac_signer("HS256");
    let auth = auth_for(&s);
    let t = s.sign(&claims("x"), HOUR).unwrap();
    let with_prefix = format!("Bearer {t}");
    let quoted = format!("\"{t}\"");
    for creds in [
        Credentials {
            bearer: Some(&with_prefix),
            ..Credentials::none(REMOTE)
        },
        Credentials {
            bearer: Some(&t),
            ..Credentials::none(REMOTE)
        },
        Credentials {
            userpolicy_cookie: Some(&quoted),
            ..Credentials::none(REMOTE)
        },
        // Empty header and cookie count as absent.
        Credentials {
            userpolicy_header: Some(" "),
            userpolicy_cookie: Some(""),
            bearer: Some(&t),
            ..Credentials::none(REMOTE)
        },
    ] {
        let id = auth.authenticate(&creds).unwrap();
        assert_eq!(id.jwthash, hex::encode(Sha256::digest(t.as_bytes())));
    }
}

// ------------------------------------------------------------ USER_DN

#[test]
fn user_dn_from_an_untrusted_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dn_auth(dir.path());
    let err = auth
        .authenticate(&dn_creds("CN=jane.doe,OU=people,O=acme", REMOTE))
        .unwrap_err();
    assert!(matches!(err, AuthError::UntrustedUserDn { .. }));
    assert_eq!(
        err.to_string(),
        "USER_DN header from an untrusted address (203.0.113.9)"
    );
    assert!(auth
        .authenticate(&dn_creds(
            "CN=jane.doe,OU=people,O=acme",
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        ))
        .is_ok());
    // A dual-stack listener reports IPv4 loopback as ::ffff:127.0.0.1.
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    assert!(auth
        .authenticate(&dn_creds("CN=jane.doe,OU=people,O=acme", mapped))
        .is_ok());
    let mapped_remote = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 9).to_ipv6_mapped());
    assert!(auth
        .authenticate(&dn_creds("CN=jane.doe,OU=people,O=acme", mapped_remote))
        .is_err());
}

#[test]
fn trusted_proxies_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Authenticator::from_config(&IdentityConfig {
        users_file: Some(users_file(dir.path())),
        trusted_proxies: vec!["203.0.113.0/24".parse().unwrap()],
        ..hmac_config()
    })
    .unwrap();
    assert!(auth
        .authenticate(&dn_creds("CN=jane.doe,OU=people,O=acme", REMOTE))
        .is_ok());
    assert!(auth
        .authenticate(&dn_creds("CN=jane.doe,OU=people,O=acme", LOCAL))
        .is_err());
}

#[test]
fn unknown_dn_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dn_auth(dir.path());
    let err = auth
        .authenticate(&dn_creds("CN=mallory,O=acme", LOCAL))
        .unwrap_err();
    assert!(matches!(err, AuthError::UnknownDn { .. }));
    assert_eq!(
        err.to_string(),
        "USER_DN \"CN=mallory,O=acme\" is not in the users file"
    );
    // Case still matters: normalisation is about spacing only.
    assert!(auth
        .authenticate(&dn_creds("cn=jane.doe,ou=people,o=acme", LOCAL))
        .is_err());
    // Without a users file every DN is unknown.
    let auth = Authenticator::from_config(&hmac_config()).unwrap();
    assert!(matches!(
        auth.authenticate(&dn_creds("CN=jane.doe,OU=people,O=acme", LOCAL)),
        Err(AuthError::NoUsersFile)
    ));
}

#[test]
fn dn_with_different_comma_spacing_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dn_auth(dir.path());
    for (sent, label) in [
        (
            "CN=jane.doe, OU=people, O=acme",
            "CN=jane.doe,OU=people,O=acme",
        ),
        (
            "  CN=jane.doe ,OU=people,  O=acme ",
            "CN=jane.doe,OU=people,O=acme",
        ),
        ("CN=bob,OU=people,O=acme", "CN=bob, OU=people, O=acme"),
        ("CN=bob, OU=people, O=acme", "CN=bob, OU=people, O=acme"),
    ] {
        let id = auth.authenticate(&dn_creds(sent, LOCAL)).unwrap();
        assert_eq!(id.claims.label(), label, "{sent}");
        // The file's spelling, so the same user always has the same jwthash.
        assert_eq!(id.jwthash, canonical_hash(id.claims.raw()));
    }
}

#[test]
fn dn_normalisation_respects_escapes() {
    assert_eq!(normalize_dn(" CN=a , O=b "), "CN=a,O=b");
    assert_eq!(
        normalize_dn(r"CN=Smith\, John, O=acme"),
        r"CN=Smith\, John,O=acme"
    );
    assert_eq!(normalize_dn(r"CN=trailing\ , O=x"), r"CN=trailing\ ,O=x");
    assert_eq!(normalize_dn(r"CN=a\\ , O=x"), r"CN=a\\,O=x");
    assert_eq!(normalize_dn("CN=a b,O=c d"), "CN=a b,O=c d");
}

#[test]
fn users_file_errors_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |path: std::path::PathBuf| IdentityConfig {
        users_file: Some(path),
        ..hmac_config()
    };
    let missing = dir.path().join("nope.json");
    let err = Authenticator::from_config(&cfg(missing)).unwrap_err();
    assert!(matches!(err, IdentityConfigError::Io { .. }), "{err}");
    for (name, body) in [
        ("bad.json", "{not json"),
        ("shape.json", r#"[{"label":"CN=a"}]"#),
        ("nolabel.json", r#"{"users":[{"values":{}}]}"#),
        (
            "values.json",
            r#"{"users":[{"label":"CN=a","values":["x"]}]}"#,
        ),
        (
            "dup.json",
            r#"{"users":[{"label":"CN=a,O=b"},{"label":"CN=a,O=b"}]}"#,
        ),
        (
            "spacing.json",
            r#"{"users":[{"label":"CN=a,O=b"},{"label":"CN=a, O=b"}]}"#,
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let err = Authenticator::from_config(&cfg(path)).unwrap_err();
        assert!(
            matches!(err, IdentityConfigError::UsersFile { .. }),
            "{name}: {err}"
        );
    }
    // A user without values gets an empty map.
    let path = dir.path().join("novalues.json");
    std::fs::write(&path, r#"{"users":[{"label":"CN=a"}]}"#).unwrap();
    let auth = Authenticator::from_config(&cfg(path)).unwrap();
    assert_eq!(auth.user_count(), 1);
    let id = auth.authenticate(&dn_creds("CN=a", LOCAL)).unwrap();
    assert_eq!(id.claims.raw(), &json!({"label": "CN=a", "values": {}}));
}

// ---------------------------------------------------------- anonymous

#[test]
fn anonymous_when_nothing_is_sent() {
    let auth = Authenticator::from_config(&hmac_config()).unwrap();
    let id = auth.authenticate(&Credentials::none(REMOTE)).unwrap();
    assert_eq!(id.kind, IdentityKind::Anonymous);
    assert_eq!(
        id.claims.raw(),
        &json!({"label": "anonymous", "values": {}})
    );
    assert_eq!(
        id.jwthash,
        hex::encode(Sha256::digest(br#"{"label":"anonymous","values":{}}"#))
    );
    // An empty USER_DN is no USER_DN, even from an untrusted peer.
    let id = auth.authenticate(&dn_creds("", REMOTE)).unwrap();
    assert_eq!(id.kind, IdentityKind::Anonymous);
}

#[test]
fn canonical_json_sorts_keys_at_every_level() {
    let v = json!({"values": {"b": [2, {"y": 1, "x": "é"}], "a": null}, "label": "l"});
    assert_eq!(
        canonical_json(&v),
        r#"{"label":"l","values":{"a":null,"b":[2,{"x":"é","y":1}]}}"#
    );
}

// ------------------------------------------------------ keys and config

#[test]
fn dev_key_is_created_once_with_private_permissions_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vellum-data");
    let cfg = IdentityConfig {
        data_dir: data.clone(),
        ..IdentityConfig::default()
    };
    let auth = Authenticator::from_config(&cfg).unwrap();
    assert!(auth.uses_dev_key());
    assert_eq!(auth.algorithms(), ["ES256"]);
    let key_path = data.join(DEV_KEY_FILE);
    assert_eq!(auth.dev_key_path(), Some(key_path.as_path()));
    assert!(std::fs::read_to_string(&key_path)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let signer = TokenSigner::dev(&data).unwrap();
    assert_eq!(signer.algorithm(), "ES256");
    assert_eq!(
        std::fs::read_to_string(data.join(DEV_PUB_FILE)).unwrap(),
        signer.public_pem().unwrap()
    );
    let t = signer.sign(&claims("dev"), HOUR).unwrap();
    assert_accepts(&auth, &t, "dev");
    // A restart keeps the key: old tokens still verify.
    let again = Authenticator::from_config(&cfg).unwrap();
    assert_accepts(&again, &t, "dev");
    assert_eq!(
        TokenSigner::from_config(&cfg).unwrap().public_pem(),
        signer.public_pem()
    );
    // Leftover temporary files would accumulate secrets.
    let names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn dev_key_creation_races_end_with_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let pems: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| TokenSigner::dev(&data).unwrap().public_pem().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(pems.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn jwt_pub_accepts_pem_base64_path_and_pkcs1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pub.pem");
    std::fs::write(&path, RSA1_PUB).unwrap();
    let b64_path = dir.path().join("pub.b64");
    std::fs::write(&b64_path, b64(RSA1_PUB)).unwrap();
    let t = rsa_signer().sign(&claims("rsa"), HOUR).unwrap();
    let spki_der_b64: String = RSA1_PUB
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let indented: String = RSA1_PUB.lines().map(|l| format!("    {l}\r\n")).collect();
    for jwt_pub in [
        RSA1_PUB.to_owned(),
        b64(RSA1_PUB),
        path.display().to_string(),
        b64_path.display().to_string(),
        RSA1_PKCS1_PUB.to_owned(),
        b64(RSA1_PKCS1_PUB),
        spki_der_b64,
        indented,
    ] {
        let auth = Authenticator::from_config(&IdentityConfig {
            jwt_pub: Some(jwt_pub.clone()),
            ..IdentityConfig::default()
        })
        .unwrap_or_else(|e| panic!("{jwt_pub}: {e}"));
        assert_eq!(auth.key_kind(), KeyKind::Rsa);
        assert!(!auth.uses_dev_key());
        assert_accepts(&auth, &t, "rsa");
    }
}

#[test]
fn jwt_pub_errors_are_clear_and_do_not_echo_private_keys() {
    let cfg = |v: &str| IdentityConfig {
        jwt_pub: Some(v.to_owned()),
        ..IdentityConfig::default()
    };
    let err = Authenticator::from_config(&cfg(RSA1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("private key"), "{err}");
    assert!(!err.contains("MII"), "{err}");
    let err = Authenticator::from_config(&cfg(&b64(P521_SEC1)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("private key"), "{err}");
    let err = Authenticator::from_config(&cfg("/etc/vellum/missing.pem"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such file"), "{err}");
    let err = Authenticator::from_config(&cfg("not a key at all"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("JWT_PUB:"), "{err}");
    let broken = RSA1_PUB.replace("MII", "XII");
    assert!(Authenticator::from_config(&cfg(&broken)).is_err());
    // A private key given to the signer is never echoed either.
    let err = TokenSigner::from_pem(&RSA1.replace("MII", "MIJ"))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("MIJ"), "{err}");
    let err = TokenSigner::from_pem(RSA1_PUB).unwrap_err().to_string();
    assert!(err.contains("public key"), "{err}");
}

#[test]
fn pem_keys_parse_in_the_forms_editors_leave_them_and_bad_blocks_say_what_is_wrong() {
    // Indented CRLF lines, and openssl's EC PARAMETERS block before the key, are accepted.
    let indented: String = P521_SEC1.lines().map(|l| format!("  {l}\r\n")).collect();
    assert_eq!(
        TokenSigner::from_pem(&indented).unwrap().algorithm(),
        "ES512"
    );
    // A block cut short.
    let cut: String = RSA1.lines().take(5).map(|l| format!("{l}\n")).collect();
    let err = TokenSigner::from_pem(&cut).unwrap_err().to_string();
    assert!(err.contains("\"PRIVATE KEY\" has no END line"), "{err}");
    // OpenSSL's legacy encrypted form, whose headers RFC 7468 does not have.
    let body: String = RSA2_PKCS1
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n");
    let legacy = format!(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
         DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n{body}\n\
         -----END RSA PRIVATE KEY-----\n"
    );
    let err = TokenSigner::from_pem(&legacy).unwrap_err().to_string();
    assert!(err.contains("has headers"), "{err}");
    assert!(!err.contains("MII"), "{err}");
    // Base64 that is not base64, and lines wrapped at other than 64 columns (RFC 7468's
    // strict grammar, as before): an error naming the block, never its bytes.
    let err = TokenSigner::from_pem(&RSA1.replace("MII", "M!I"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PEM block \"PRIVATE KEY\" does not decode"),
        "{err}"
    );
    assert!(!err.contains("M!I"), "{err}");
    let rewrapped = {
        let b: String = RSA2_PKCS1
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let lines: Vec<&str> = b
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
            lines.join("\n")
        )
    };
    let err = TokenSigner::from_pem(&rewrapped).unwrap_err().to_string();
    assert!(err.contains("does not decode"), "{err}");
}

#[test]
fn empty_jwt_pub_and_secret_count_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Authenticator::from_config(&IdentityConfig {
        jwt_pub: Some("  ".into()),
        jwt_secret: Some(String::new()),
        data_dir: dir.path().to_path_buf(),
        ..IdentityConfig::default()
    })
    .unwrap();
    assert!(auth.uses_dev_key());
}

#[test]
fn jwt_pub_wins_over_jwt_secret() {
    let s = p256_signer();
    let auth = Authenticator::from_config(&IdentityConfig {
        jwt_secret: Some("ignored-secret".into()),
        ..config_for(&s)
    })
    .unwrap();
    assert_eq!(auth.algorithms(), ["ES256"]);
    let t = TokenSigner::hmac(b"ignored-secret", "HS256")
        .unwrap()
        .sign(&claims("x"), HOUR)
        .unwrap();
    assert!(matches!(
        token_err(&auth, &t),
        TokenError::AlgNotAllowed { .. }
    ));
}

#[test]
fn jwt_algorithms_can_narrow_but_never_widen() {
    let rsa = config_for(&rsa_signer());
    let with = |base: &IdentityConfig, algs: &[&str]| IdentityConfig {
        jwt_algorithms: Some(algs.iter().map(|s| s.to_string()).collect()),
        ..base.clone()
    };
    let auth = Authenticator::from_config(&with(&rsa, &["ps256", " PS512 ", ""])).unwrap();
    assert_eq!(auth.algorithms(), ["PS256", "PS512"]);
    let auth = Authenticator::from_config(&with(&rsa, &["RS256,PS256"])).unwrap();
    assert_eq!(auth.algorithms(), ["RS256", "PS256"]);
    let auth = Authenticator::from_config(&with(&rsa, &[])).unwrap();
    assert_eq!(auth.algorithms().len(), 6);
    for bad in [&["none"][..], &["HS256"], &["RS256", "ES256"], &["XS999"]] {
        let err = Authenticator::from_config(&with(&rsa, bad)).unwrap_err();
        assert!(
            matches!(err, IdentityConfigError::Algorithms(_)),
            "{bad:?}: {err}"
        );
    }
    let err =
        Authenticator::from_config(&with(&config_for(&p256_signer()), &["ES384"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "JWT_ALGORITHMS: ES384 cannot be verified with a EC P-256 key (it can verify: ES256)"
    );
    let auth = Authenticator::from_config(&with(&hmac_config(), &["HS512"])).unwrap();
    assert_eq!(auth.algorithms(), ["HS512"]);
    assert_eq!(
        TokenSigner::from_config(&with(&hmac_config(), &["HS512"]))
            .unwrap()
            .algorithm(),
        "HS512"
    );
}

#[test]
fn signer_public_keys_match_openssl() {
    fn der_of(pem: &str) -> Vec<u8> {
        p256::pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
            .unwrap()
            .1
    }
    let pairs = [(RSA1, RSA1_PUB), (ED1, ED1_PUB), (P521_SEC1, P521_PUB)];
    for (private, public) in pairs {
        let s = TokenSigner::from_pem(private).unwrap();
        assert_eq!(
            der_of(&s.public_pem().unwrap()),
            der_of(public),
            "{}",
            s.algorithm()
        );
    }
}

#[test]
fn signer_chooses_and_checks_algorithms() {
    assert_eq!(
        TokenSigner::from_pem(P521_SEC1).unwrap().algorithm(),
        "ES512"
    );
    assert_eq!(
        TokenSigner::from_pem(&b64(ED1)).unwrap().algorithm(),
        "EdDSA"
    );
    assert!(rsa_signer().with_algorithm("ES256").is_err());
    assert!(rsa_signer().with_algorithm("HS256").is_err());
    assert!(p256_signer().with_algorithm("ES384").is_err());
    assert!(TokenSigner::hmac(b"secret", "RS256").is_err());
    assert!(TokenSigner::hmac(b"", "HS256").is_err());
    assert!(TokenSigner::hmac(b"secret", "none").is_err());
    let with_pub = IdentityConfig {
        jwt_pub: Some(P521_PUB.into()),
        ..IdentityConfig::default()
    };
    assert!(matches!(
        TokenSigner::from_config(&with_pub),
        Err(IdentityConfigError::NoSigningKey(_))
    ));
    assert!(hmac_signer("HS256")
        .sign(&json!("not an object"), HOUR)
        .is_err());
}

#[test]
fn sign_sets_exp_and_iat_overriding_given_ones() {
    let s = hmac_signer("HS256");
    let auth = auth_for(&s);
    let t = s
        .sign(
            &json!({"label": "x", "exp": 1, "iat": "junk", "values": {}}),
            Duration::from_secs(600),
        )
        .unwrap();
    let id = assert_accepts(&auth, &t, "x");
    let exp = id.claims.raw()["exp"].as_i64().unwrap();
    let iat = id.claims.raw()["iat"].as_i64().unwrap();
    assert_eq!(exp - iat, 600);
    assert!((iat - now()).abs() <= 2);
}

#[test]
fn authenticator_is_send_and_sync_and_debug_hides_keys() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Authenticator>();
    assert_send_sync::<TokenSigner>();
    let token = hmac_signer("HS256").sign(&claims("x"), HOUR).unwrap();
    let dbg = format!(
        "{:?} {:?} {:?} {:?}",
        Authenticator::from_config(&hmac_config()).unwrap(),
        hmac_signer("HS256"),
        hmac_config(),
        header(&token)
    );
    assert!(!dbg.contains("a-test-secret"), "{dbg}");
    assert!(!dbg.contains(&token), "{dbg}");
}
