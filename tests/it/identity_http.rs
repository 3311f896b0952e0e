//! Identity over HTTP (SPEC §3): where tokens are taken from, which are refused (401 with
//! WWW-Authenticate, nothing written), USER_DN and trusted proxies, readonly and
//! anonymous callers, jwthash, issuer and audience.

use crate::common;
use crate::common::extra;

use common::{claims, spawn_app, spawn_app_with, TestApp};
use extra::*;
use serde_json::{json, Value};

/// A create under the root: only root may do it, so a forged root token would show.
fn forged_write() -> Value {
    json!([{"action": "C", "parentoid": "1", "name": "pwned"}])
}

async fn assert_401(resp: reqwest::Response, what: &str) {
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let (s, body) = status_json(resp).await;
    assert_eq!(s, 401, "{what}: {body}");
    assert!(
        www.is_some_and(|v| !v.is_empty()),
        "{what}: 401 without WWW-Authenticate"
    );
    assert_error_shape(&body, 401, None);
}

/// The token is refused on a read and on a write, and the write changed nothing.
async fn assert_token_refused(app: &TestApp, token: &str, what: &str) {
    assert_401(app.get("/self", Some(token)).await, what).await;
    assert_401(app.get("/props/1", Some(token)).await, what).await;
    let before = app.fingerprint();
    assert_401(app.write(Some(token), &forged_write()).await, what).await;
    assert_eq!(
        before,
        app.fingerprint(),
        "{what}: a refused write changed the store"
    );
    // Children of the root inherit its policy (everyone reads), so anonymous would see it.
    let (s, _) = app.get_json("/props/1/pwned", None).await;
    assert_eq!(s, 404, "{what}: the forged write must not exist");
}

async fn self_label(base: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    status_json(get_with(base, "/self", headers).await).await
}

// ---------------------------------------------------------------------------------------
// Where tokens come from
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tokens_are_accepted_from_the_userpolicy_header_cookie_and_bearer() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let cookie = format!("userpolicy={jane}");
    let bearer = format!("Bearer {jane}");
    for headers in [
        vec![("userpolicy", jane.as_str())],
        vec![("cookie", cookie.as_str())],
        vec![("authorization", bearer.as_str())],
    ] {
        let (s, me) = self_label(&app.base, &headers).await;
        assert_eq!(s, 200, "{headers:?}: {me}");
        assert_eq!(me["label"], "asjane", "{headers:?}");
        assert_eq!(me["values"]["email"], json!([JANE]));
    }
    // A cookie among others.
    let cookies = format!("theme=dark; userpolicy={jane}; lang=en");
    let (s, me) = self_label(&app.base, &[("cookie", &cookies)]).await;
    assert_eq!(s, 200);
    assert_eq!(me["label"], "asjane");

    // A write with each lands as jane.
    let ns = app.namespace_oid().await;
    let resp = write_with(
        &app,
        &[("authorization", &bearer)],
        &json!([{"action": "C", "parentoid": ns, "name": JANE}]),
    )
    .await;
    let (s, out) = status_json(resp).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out[0]["userpolicy"]["label"], "asjane");
    assert_eq!(out[0]["jwthash"], sha256_hex(&jane));

    let resp = write_with(
        &app,
        &[("cookie", &cookie), ("origin", &app.base)], // a cookie write needs its own origin
        &json!([{"action": "C", "parentoid": oid_of(&out[0]), "name": "by-cookie"}]),
    )
    .await;
    let (s, out) = status_json(resp).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out[0]["userpolicy"]["label"], "asjane");
}

#[tokio::test]
async fn jwthash_on_written_events_is_the_sha256_hex_of_the_token() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let out = app
        .write_ok(
            Some(&root),
            &json!([{"action": "C", "parentoid": "1", "name": "hashed"}]),
        )
        .await;
    assert_eq!(out[0]["jwthash"], sha256_hex(&root));
    let (_, props) = app
        .get_json(&format!("/props/{}", oid_of(&out[0])), None)
        .await;
    assert_eq!(
        props["jwthash"],
        sha256_hex(&root),
        "stored, not just echoed"
    );
    // Another token for the same claims hashes differently.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let root2 = app.token_for("root");
    assert_ne!(root, root2);
    let out2 = app
        .write_ok(
            Some(&root2),
            &json!([{"action": "U", "oid": oid_of(&out[0]), "description": "2"}]),
        )
        .await;
    assert_eq!(out2[0]["jwthash"], sha256_hex(&root2));
}

// ---------------------------------------------------------------------------------------
// Refused tokens
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_alg_none_token_is_401_and_writes_nothing() {
    let app = spawn_app().await;
    let c = fresh(claims("root"));
    assert_token_refused(&app, &alg_none_token(&c), "alg none").await;
    // Other spellings, and none with a signature part that is not empty.
    for alg in ["None", "NONE", "nOnE"] {
        let t = format!(
            "{}.{}.",
            b64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            b64url(c.to_string().as_bytes())
        );
        assert_token_refused(&app, &t, alg).await;
    }
    let real = app.token_for("root");
    let sig = real.rsplit('.').next().unwrap();
    let t = format!("{}{sig}", alg_none_token(&c));
    assert_token_refused(&app, &t, "alg none with a borrowed signature").await;
}

#[tokio::test]
async fn a_token_signed_by_another_p521_key_is_401() {
    let app = spawn_app().await;
    let other = Es512::random();
    assert_token_refused(
        &app,
        &other.token(&fresh(claims("root"))),
        "another P-521 key",
    )
    .await;
    // The harness's own signer is accepted (a positive control for the same claims).
    let (s, _) = app.get_json("/self", Some(&app.token_for("root"))).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_public_key_is_401() {
    let app = spawn_app().await;
    let c = fresh(claims("root"));
    let pem = app
        .signer
        .public_pem()
        .expect("an ES512 signer has a public key");
    // Algorithm confusion: the public key text as an HMAC secret, in each form it could
    // be configured in.
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&pem)
    };
    for secret in [pem.as_bytes(), pem.trim().as_bytes(), b64.as_bytes()] {
        assert_token_refused(
            &app,
            &hs256_token(secret, &c),
            "HS256 keyed with the public key",
        )
        .await;
    }
}

#[tokio::test]
async fn an_es256_token_from_a_fresh_p256_key_is_401() {
    let app = spawn_app().await;
    assert_token_refused(
        &app,
        &es256_token_fresh_key(&fresh(claims("root"))),
        "ES256",
    )
    .await;
}

#[tokio::test]
async fn a_token_naming_its_own_key_is_not_trusted() {
    let app = spawn_app().await;
    let attacker = Es512::random();
    let c = fresh(claims("root"));
    for extra_header in [
        json!({"jku": "http://127.0.0.1:1/keys.json"}),
        json!({"x5u": "http://127.0.0.1:1/cert.pem"}),
        json!({"jwk": {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}}),
        json!({"kid": "../../../../dev/null"}),
    ] {
        let mut header = json!({"alg": "ES512", "typ": "JWT"});
        for (k, v) in extra_header.as_object().unwrap() {
            header[k] = v.clone();
        }
        let t = attacker.sign(&header, &c);
        assert_token_refused(&app, &t, &format!("header {extra_header}")).await;
    }
}

#[tokio::test]
async fn garbage_tokens_are_401() {
    let app = spawn_app().await;
    let real = app.token_for("root");
    let parts: Vec<&str> = real.split('.').collect();
    let flipped_sig = {
        let mut s = parts[2].to_string();
        let last = s.pop().unwrap();
        s.push(if last == 'A' { 'B' } else { 'A' });
        s
    };
    let tampered_claims = {
        let mut c = fresh(claims("jane"));
        c["values"]["privilege"] = json!(["root"]);
        b64url(c.to_string().as_bytes())
    };
    let cases = [
        "garbage".to_string(),
        "a.b.c".to_string(),
        "a.b".to_string(),
        format!("{real}.extra"),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.{flipped_sig}", parts[0], parts[1]),
        format!("{}.{tampered_claims}.{}", parts[0], parts[2]),
        format!("!!!.{}.{}", parts[1], parts[2]),
        "x".repeat(10_000),
    ];
    for t in &cases {
        let what = format!("garbage {:?}", t.chars().take(40).collect::<String>());
        assert_token_refused(&app, t, &what).await;
    }
}

#[tokio::test]
async fn a_bad_token_in_the_header_with_a_good_cookie_is_401() {
    let app = spawn_app().await;
    let good = app.token_for("root");
    let cookie = format!("userpolicy={good}");
    let bearer = format!("Bearer {good}");
    let resp = get_with(
        &app.base,
        "/self",
        &[("userpolicy", "garbage"), ("cookie", &cookie)],
    )
    .await;
    assert_401(resp, "bad header, good cookie").await;
    let bad_cookie = "userpolicy=garbage".to_string();
    let resp = get_with(
        &app.base,
        "/self",
        &[("cookie", &bad_cookie), ("authorization", &bearer)],
    )
    .await;
    assert_401(resp, "bad cookie, good bearer").await;

    // The same on a write: nothing lands.
    let before = app.fingerprint();
    let resp = write_with(
        &app,
        &[("userpolicy", "garbage"), ("cookie", &cookie)],
        &forged_write(),
    )
    .await;
    assert_401(resp, "write with bad header, good cookie").await;
    assert_eq!(before, app.fingerprint());
}

#[tokio::test]
async fn expired_tokens_are_401_and_write_nothing() {
    let app = spawn_keyed_app(&[]).await;
    let jane = claims("jane");
    // Positive control: the kept key signs tokens the server accepts.
    let ok = app.signer.token(&fresh(jane.clone()));
    let (s, me) = status_json(app.get("/self", Some(&ok)).await).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["label"], "asjane");

    let mut c = jane.clone();
    c["exp"] = json!(now_secs() - 3600);
    c["iat"] = json!(now_secs() - 7200);
    let expired = app.signer.token(&c);
    assert_401(app.get("/self", Some(&expired)).await, "expired").await;
    let ns = status_json(app.get("/config", None).await).await.1["GMDATA_NAMESPACE_OID"]
        .as_str()
        .unwrap()
        .to_string();
    let before = app.fingerprint();
    let write = json!([{"action": "C", "parentoid": ns, "name": JANE}]);
    assert_401(app.write(Some(&expired), &write).await, "expired write").await;
    assert_eq!(before, app.fingerprint());

    // A few seconds' leeway: a token that expired a second ago still works.
    let mut c = jane.clone();
    c["exp"] = json!(now_secs() - 1);
    let (s, _) = status_json(app.get("/self", Some(&app.signer.token(&c))).await).await;
    assert_eq!(s, 200, "SPEC §3: a few seconds' leeway");
    // ... but not a minute.
    c["exp"] = json!(now_secs() - 60);
    assert_401(
        app.get("/self", Some(&app.signer.token(&c))).await,
        "expired a minute ago",
    )
    .await;
}

#[tokio::test]
async fn exp_and_nbf_of_the_wrong_type_are_401() {
    let app = spawn_keyed_app(&[]).await;
    let far = now_secs() + 3600;
    let mut cases = Vec::new();
    let mut c = claims("jane");
    c["exp"] = json!(far.to_string());
    cases.push(("string exp", c));
    let mut c = claims("jane");
    c["exp"] = json!([far]);
    cases.push(("array exp", c));
    let mut c = claims("jane");
    c["exp"] = json!(true);
    cases.push(("boolean exp", c));
    let mut c = fresh(claims("jane"));
    c["nbf"] = json!((now_secs() - 10).to_string());
    cases.push(("string nbf", c));
    let mut c = fresh(claims("jane"));
    c["nbf"] = json!(now_secs() + 3000);
    cases.push(("nbf in the future", c));
    for (what, c) in cases {
        let t = app.signer.token(&c);
        assert_401(app.get("/self", Some(&t)).await, what).await;
        let before = app.fingerprint();
        assert_401(
            app.write(
                Some(&t),
                &json!([{"action": "C", "parentoid": "1", "name": "x"}]),
            )
            .await,
            what,
        )
        .await;
        assert_eq!(before, app.fingerprint());
    }
}

// ---------------------------------------------------------------------------------------
// USER_DN
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_user_dn_from_localhost_in_the_users_file_is_believed() {
    let app = spawn_app().await;
    let (s, me) = self_label(&app.base, &[("USER_DN", JANE_DN)]).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["label"], JANE_DN);
    assert_eq!(me["values"]["email"], json!([JANE]));

    // A write lands with userpolicy.label = the DN.
    let ns = app.namespace_oid().await;
    let resp = write_with(
        &app,
        &[("USER_DN", JANE_DN)],
        &json!([{"action": "C", "parentoid": ns, "name": JANE}]),
    )
    .await;
    let (s, out) = status_json(resp).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out[0]["userpolicy"]["label"], JANE_DN);
    assert_eq!(out[0]["name"], JANE);
    // It is jane's home: the JWT jane sees it as hers.
    let (s, p) = app
        .get_json(
            &format!("/props/{}", oid_of(&out[0])),
            Some(&app.token_for("jane")),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(letters(&p), ALL_LETTERS);
}

#[tokio::test]
async fn an_unknown_user_dn_is_401() {
    let app = spawn_app().await;
    for dn in ["CN=mallory,OU=People,O=Nowhere,C=US", "garbage"] {
        assert_401(get_with(&app.base, "/self", &[("USER_DN", dn)]).await, dn).await;
        let before = app.fingerprint();
        let resp = write_with(&app, &[("USER_DN", dn)], &forged_write()).await;
        assert_401(resp, dn).await;
        assert_eq!(before, app.fingerprint());
    }
}

#[tokio::test]
async fn a_user_dn_from_an_untrusted_address_is_401() {
    let app = spawn_app_with(&["--trusted-proxies", "10.0.0.0/8"]).await;
    assert_401(
        get_with(&app.base, "/self", &[("USER_DN", JANE_DN)]).await,
        "untrusted USER_DN",
    )
    .await;
    let before = app.fingerprint();
    let ns = app.namespace_oid().await;
    let resp = write_with(
        &app,
        &[("USER_DN", JANE_DN)],
        &json!([{"action": "C", "parentoid": ns, "name": JANE}]),
    )
    .await;
    assert_401(resp, "untrusted USER_DN write").await;
    assert_eq!(before, app.fingerprint());
    // A JWT still works from the same address.
    let (s, me) = app.get_json("/self", Some(&app.token_for("jane"))).await;
    assert_eq!(s, 200);
    assert_eq!(me["label"], "asjane");
}

// ---------------------------------------------------------------------------------------
// Readonly and anonymous
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_readonly_token_cannot_write_but_can_read() {
    let app = spawn_app().await;
    let ro = app.token_for("readonly");
    let root = app.token_for("root");
    let shared = mkdir(
        &app,
        &root,
        "1",
        "shared",
        Some(owner_full_ro_all("auditor@example.com")),
    )
    .await;

    // Even where its policy grants everything, a readonly identity writes nothing.
    for body in [
        json!([{"action": "C", "parentoid": oid_of(&shared), "name": "x"}]),
        json!([{"action": "U", "oid": oid_of(&shared), "description": "x"}]),
        json!([{"action": "C", "parentoid": app.namespace_oid().await, "name": "auditor@example.com"}]),
    ] {
        let err = refused(&app, 403, None, app.write(Some(&ro), &body)).await;
        assert!(err["code"].is_string());
    }
    // Reading is fine, and the letters shown leave out the writes.
    let (s, p) = app
        .get_json(&format!("/props/{}", oid_of(&shared)), Some(&ro))
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(letters(&p), ["R", "X"]);
    let (s, l) = app.get_json("/list/1", Some(&ro)).await;
    assert_eq!(s, 200, "{l}");
    assert!(l.as_array().unwrap().iter().any(|e| e["name"] == "shared"));
    let (s, me) = app.get_json("/self", Some(&ro)).await;
    assert_eq!(s, 200);
    assert_eq!(me["label"], "auditor");

    // The same through USER_DN.
    let before = app.fingerprint();
    let resp = write_with(
        &app,
        &[("USER_DN", "CN=auditor,OU=Services,O=Example,C=US")],
        &json!([{"action": "C", "parentoid": oid_of(&shared), "name": "y"}]),
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(before, app.fingerprint());
}

#[tokio::test]
async fn anonymous_reads_what_policies_grant_anonymous() {
    let app = spawn_app().await;
    let (s, me) = app.get_json("/self", None).await;
    assert_eq!(s, 200);
    assert_eq!(me, json!({"label": "anonymous", "values": {}}));

    let root = app.token_for("root");
    let public = mkdir(&app, &root, "1", "public", Some(owner_full_ro_all(JANE))).await;
    let private = mkdir(&app, &root, "1", "private", Some(owner_only(JANE))).await;

    let (s, p) = app.get_json("/props/1", None).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(letters(&p), ["R", "X"]);
    let (s, p) = app
        .get_json(&format!("/props/{}", oid_of(&public)), None)
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(letters(&p), ["R", "X"]);
    let (s, _) = app
        .get_json(&format!("/props/{}", oid_of(&private)), None)
        .await;
    assert_eq!(s, 404, "what anonymous may not read does not exist for it");
    let (s, l) = app.get_json("/list/1", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"public") && names.contains(&"world"),
        "{names:?}"
    );
    assert!(!names.contains(&"private"), "{names:?}");

    // Anonymous writes what the policy grants it: here, nothing.
    let body = json!([{"action": "C", "parentoid": oid_of(&public), "name": "anon"}]);
    let before = app.fingerprint();
    let (s, b) = status_json(app.write(None, &body).await).await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(before, app.fingerprint());
}

// ---------------------------------------------------------------------------------------
// Issuer and audience
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn with_jwt_issuer_set_tokens_without_it_are_401() {
    let iss = "https://jwt.example.com";
    let app = spawn_app_with(&["--jwt-issuer", iss]).await;
    assert_token_refused(&app, &app.token_for("root"), "no iss").await;
    let mut c = claims("root");
    c["iss"] = json!("https://evil.example.com");
    assert_token_refused(&app, &app.token(&c), "wrong iss").await;
    c["iss"] = json!(iss);
    let good = app.token(&c);
    let (s, me) = app.get_json("/self", Some(&good)).await;
    assert_eq!(s, 200, "{me}");
    app.write_ok(
        Some(&good),
        &json!([{"action": "C", "parentoid": "1", "name": "with-iss"}]),
    )
    .await;
}

#[tokio::test]
async fn with_jwt_audience_set_tokens_without_it_are_401() {
    let aud = "vellum-tests";
    let app = spawn_app_with(&["--jwt-audience", aud]).await;
    assert_token_refused(&app, &app.token_for("root"), "no aud").await;
    let mut c = claims("root");
    c["aud"] = json!("someone-else");
    assert_token_refused(&app, &app.token(&c), "wrong aud").await;
    for good_aud in [json!(aud), json!(["other", aud])] {
        c["aud"] = good_aud.clone();
        let good = app.token(&c);
        let (s, me) = app.get_json("/self", Some(&good)).await;
        assert_eq!(s, 200, "aud {good_aud}: {me}");
    }
}
