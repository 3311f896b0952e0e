//! Sharing (SPEC §9.1–9.4), over HTTP against the real server: offers with terms and
//! acceptance, what a share grants on every read endpoint, caps on shares made through
//! shares, the cascade of a revocation, who sees what, and bad input.

use serde_json::{json, Value};

use crate::common::extra::*;
use crate::common::{assert_hex16, spawn_app, TestApp};

const ROB: &str = "rob.jonhson@email.com";

/// Sends `method path` with a JSON body (or none) as `token`; returns status and JSON.
pub(crate) async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = app
        .client
        .request(method.parse().unwrap(), format!("{}{}", app.base, path));
    if let Some(t) = token {
        req = req.header("userpolicy", t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    status_json(req.send().await.unwrap()).await
}

pub(crate) async fn share(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, v) = call(app, "POST", "/shares", Some(token), Some(&body)).await;
    assert_eq!(status, 201, "{v}");
    v
}

/// Jane's private folder `docs` (owner-only) holding a file `note.txt`; returns the
/// folder's and the file's oids.
pub(crate) async fn janes_docs(app: &TestApp) -> (String, String) {
    let root = app.token_for("root");
    let jane = app.token_for("jane");
    let folder = mkdir(app, &root, "1", "docs", Some(owner_only(JANE))).await;
    let folder = oid_of(&folder);
    let meta = json!([{"action": "C", "parentoid": folder, "name": "note.txt", "isfile": true,
                       "objectpolicy": owner_only(JANE)}]);
    let resp = write_parts(app, Some(&jane), &meta, &[("note.txt", b"for your eyes")]).await;
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "{v}");
    (folder, oid_of(&v[0]))
}

pub(crate) async fn status(app: &TestApp, path: &str, token: &str) -> u16 {
    app.get(path, Some(token)).await.status().as_u16()
}

pub(crate) fn email(who: &str) -> Value {
    json!({"claim": "email", "value": who})
}

#[tokio::test]
async fn an_offer_with_terms_grants_nothing_until_accepted_and_a_revocation_ends_it_at_once() {
    let app = spawn_app().await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (folder, file) = janes_docs(&app).await;
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 404);

    let offer = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader",
               "terms": "no copies", "message": "the notes, as promised"}),
    )
    .await;
    assert_hex16(&offer["id"], "id");
    assert_eq!(offer["state"], "pending");
    assert_eq!(offer["acceptance"], "required");
    assert_eq!(offer["letters"], json!(["R", "X"]));
    assert_eq!(offer["sharer"]["label"], "asjane");
    assert_eq!(offer["name"], "docs");
    let id = offer["id"].as_str().unwrap().to_string();

    // Pending: Bob sees the offer (terms, message, sharer, name), never the object.
    for path in [
        format!("/props/{file}"),
        format!("/props/{folder}"),
        format!("/stream/{file}"),
        format!("/list/{folder}"),
        format!("/history/{file}"),
    ] {
        assert_eq!(
            status(&app, &path, &bob).await,
            404,
            "{path} before accepting"
        );
    }
    let (s, inbox) = call(
        &app,
        "GET",
        "/shares/incoming?state=pending",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(inbox.as_array().unwrap().len(), 1, "{inbox}");
    assert_eq!(inbox[0]["terms"], "no copies");
    assert_eq!(inbox[0]["message"], "the notes, as promised");

    // The sharer may not accept for him.
    let (s, v) = call(
        &app,
        "POST",
        &format!("/shares/{id}/accept"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!(s, 403, "{v}");

    let (s, accepted) = call(
        &app,
        "POST",
        &format!("/shares/{id}/accept"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(s, 200, "{accepted}");
    assert_eq!(accepted["state"], "accepted");

    // Everything beneath the folder, on every read endpoint.
    let (s, props) = app.get_json(&format!("/props/{file}"), Some(&bob)).await;
    assert_eq!(s, 200, "{props}");
    assert_eq!(letters(&props), ["R", "X"]);
    let body = app.get(&format!("/stream/{file}"), Some(&bob)).await;
    assert_eq!(body.status(), 200);
    assert_eq!(body.bytes().await.unwrap().as_ref(), b"for your eyes");
    let (s, listing) = app.get_json(&format!("/list/{folder}"), Some(&bob)).await;
    assert_eq!(s, 200, "{listing}");
    assert_eq!(listing.as_array().unwrap().len(), 1);
    assert_eq!(status(&app, &format!("/history/{file}"), &bob).await, 200);
    assert_eq!(status(&app, &format!("/show/{file}"), &bob).await, 200);
    // A reader share does not let him write.
    let resp = app
        .write(
            Some(&bob),
            &json!([{"action": "U", "oid": file, "description": "mine now"}]),
        )
        .await;
    assert_eq!(resp.status(), 403);

    // Revoked: the very next request is refused, on every endpoint.
    let (s, revoked) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(s, 200, "{revoked}");
    assert_eq!(revoked["state"], "revoked");
    for path in [
        format!("/props/{file}"),
        format!("/stream/{file}"),
        format!("/list/{folder}"),
        format!("/history/{file}"),
        format!("/show/{file}"),
    ] {
        assert_eq!(
            status(&app, &path, &bob).await,
            404,
            "{path} after revoking"
        );
    }
    // Accepting a revoked share is a conflict; the log has every step.
    let (s, v) = call(
        &app,
        "POST",
        &format!("/shares/{id}/accept"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("share_closed"))
    );
    let (s, log) = call(&app, "GET", &format!("/shares/{id}/log"), Some(&bob), None).await;
    assert_eq!(s, 200, "{log}");
    let kinds: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        // The key rotation the revocation queued may have finished by now (tests/it/tasks.rs).
        .filter(|k| *k != "rotated")
        .collect();
    assert_eq!(kinds, ["offered", "accepted", "revoked"]);
    assert_eq!(log[1]["by"]["label"], "asBob");
    assert_eq!(log[2]["state"]["state"], "revoked");
    let stamps: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tstamp"].as_str().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
}

#[tokio::test]
async fn a_share_through_a_share_is_capped_by_it_and_revoked_with_it() {
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let (folder, file) = janes_docs(&app).await;
    // No terms: accepted when made.
    let bobs = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "writer",
               "sharing_mode": "anyone", "expires": "2099-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(bobs["state"], "accepted");
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 200);

    // More letters, a later expiry, or a wider mode than his own share: refused, not trimmed.
    for (what, body) in [
        (
            "letters",
            json!({"oid": file, "audience": email(ROB), "letters": ["R", "X", "D"]}),
        ),
        (
            "role",
            json!({"oid": file, "audience": email(ROB), "role": "full"}),
        ),
        (
            "expiry",
            json!({"oid": file, "audience": email(ROB), "role": "reader",
                          "expires": "2100-01-01T00:00:00Z"}),
        ),
    ] {
        let (s, v) = call(&app, "POST", "/shares", Some(&bob), Some(&body)).await;
        assert_eq!(s, 403, "{what}: {v}");
        assert_eq!(v["error"]["code"], "permission_denied", "{what}");
    }
    let robs = share(
        &app,
        &bob,
        json!({"oid": file, "audience": email(ROB), "letters": ["R", "X"]}),
    )
    .await;
    assert_eq!(robs["parent"], bobs["id"]);
    assert_eq!(
        robs["expires"], "2099-01-01T00:00:00Z",
        "takes the parent's expiry"
    );
    assert_eq!(robs["sharing_mode"], "owner");
    assert_eq!(status(&app, &format!("/stream/{file}"), &rob).await, 200);
    // Rob's share is `owner` mode: he may not share on.
    let (s, _) = call(
        &app,
        "POST",
        "/shares",
        Some(&rob),
        Some(&json!({"oid": file, "audience": email(JANE), "role": "reader"})),
    )
    .await;
    assert_eq!(s, 403);

    // Jane sees both on her folder, with their parents.
    let (s, all) = call(
        &app,
        "GET",
        &format!("/shares?oid={file}"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    // Rob holds R and X through his share, not U: he may not list them.
    let (s, _) = call(
        &app,
        "GET",
        &format!("/shares?oid={file}"),
        Some(&rob),
        None,
    )
    .await;
    assert_eq!(s, 403);

    // Revoking Bob's share revokes Rob's, in the same transaction.
    let bid = bobs["id"].as_str().unwrap();
    let rid = robs["id"].as_str().unwrap();
    let (s, _) = call(&app, "DELETE", &format!("/shares/{bid}"), Some(&jane), None).await;
    assert_eq!(s, 200);
    assert_eq!(status(&app, &format!("/stream/{file}"), &rob).await, 404);
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 404);
    let (s, r) = call(&app, "GET", &format!("/shares/{rid}"), Some(&jane), None).await;
    assert_eq!((s, r["state"].as_str()), (200, Some("revoked")), "{r}");
    let (_, rlog) = call(&app, "GET", &format!("/shares/{rid}/log"), Some(&rob), None).await;
    let last = rlog
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["kind"] != "rotated")
        .unwrap();
    assert_eq!(last["by"]["label"], "asjane");
}

#[tokio::test]
async fn an_org_share_reaches_everyone_carrying_the_claim_and_a_writer_share_lets_them_write() {
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let (folder, file) = janes_docs(&app).await;
    // Only Bob's claims carry org "ieee" among the fixtures.
    share(
        &app,
        &jane,
        json!({"oid": folder, "audience": {"claim": "org", "value": "ieee"}, "role": "writer"}),
    )
    .await;
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 200);
    assert_eq!(status(&app, &format!("/props/{file}"), &rob).await, 404);
    // C and U under a writer share, decided on the writer.
    let out = app
        .write_ok(
            Some(&bob),
            &json!([
                {"action": "U", "oid": file, "description": "reviewed"},
                // Jane's policy leaves Bob only what the share gives (no P): he says so.
                {"action": "C", "parentoid": folder, "name": "reply.txt",
                 "objectpolicy": owner_only(JANE), "allowpartialpermissions": true}
            ]),
        )
        .await;
    assert_eq!(out.len(), 2);
    // No D under a writer share.
    let resp = app
        .write(Some(&bob), &json!([{"action": "D", "oid": file}]))
        .await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn strangers_learn_nothing_about_shares_and_recipients_may_decline_or_leave() {
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let (folder, _file) = janes_docs(&app).await;
    let offer = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader", "terms": "t"}),
    )
    .await;
    let id = offer["id"].as_str().unwrap().to_string();
    for (method, path) in [
        ("GET", format!("/shares/{id}")),
        ("GET", format!("/shares/{id}/log")),
        ("POST", format!("/shares/{id}/accept")),
        ("POST", format!("/shares/{id}/decline")),
        ("DELETE", format!("/shares/{id}")),
        ("GET", "/shares/00000000000000ff".to_string()),
    ] {
        let (s, v) = call(&app, method, &path, Some(&rob), None).await;
        assert_eq!(s, 404, "{method} {path}: {v}");
        assert_error_shape(&v, 404, None);
    }
    // Nor about objects they cannot read.
    let (s, _) = call(
        &app,
        "POST",
        "/shares",
        Some(&rob),
        Some(&json!({"oid": folder, "audience": email(ROB), "role": "reader"})),
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = call(&app, "GET", "/shares/outgoing", Some(&rob), None).await;
    assert_eq!((s, v), (200, json!([])));
    // Anonymous callers have no shares.
    let (s, v) = call(&app, "GET", "/shares/incoming", None, None).await;
    assert_eq!(s, 401, "{v}");

    let (s, declined) = call(
        &app,
        "POST",
        &format!("/shares/{id}/decline"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!((s, declined["state"].as_str()), (200, Some("declined")));
    let (s, _) = call(
        &app,
        "POST",
        &format!("/shares/{id}/accept"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(s, 409);
    let (s, out) = call(
        &app,
        "GET",
        "/shares/outgoing?state=declined",
        Some(&jane),
        None,
    )
    .await;
    assert_eq!((s, out.as_array().map(Vec::len)), (200, Some(1)));

    // A recipient leaving is a revocation by them; a stale tstamp is a conflict.
    let second = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let id2 = second["id"].as_str().unwrap();
    let (s, v) = call(
        &app,
        "DELETE",
        &format!("/shares/{id2}?tstamp=0000000000000001"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("stale_tstamp"))
    );
    let t = second["tstamp"].as_str().unwrap();
    let (s, left) = call(
        &app,
        "DELETE",
        &format!("/shares/{id2}?tstamp={t}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        (s, left["state"].as_str()),
        (200, Some("revoked")),
        "{left}"
    );
    let (_, log) = call(
        &app,
        "GET",
        &format!("/shares/{id2}/log"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!(log[1]["by"]["label"], "asBob");
}

#[tokio::test]
async fn malformed_shares_are_refused_with_their_reason_and_change_nothing() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let (folder, _) = janes_docs(&app).await;
    let before = app.fingerprint();
    let ok = json!({"oid": folder, "audience": email(BOB), "role": "reader"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases: Vec<(&str, Value, u16)> = vec![
        ("not JSON", Value::String("{".into()), 400),
        ("an array", json!([1]), 400),
        ("no oid", without("oid"), 400),
        ("oid not hex", with("oid", json!("xyz")), 400),
        ("oid a number", with("oid", json!(12)), 400),
        ("no audience", without("audience"), 400),
        ("audience a string", with("audience", json!("bob")), 400),
        (
            "empty claim value",
            with("audience", json!({"claim": "email", "value": ""})),
            400,
        ),
        (
            "empty claim",
            with("audience", json!({"claim": " ", "value": "x"})),
            400,
        ),
        ("no role or letters", without("role"), 400),
        ("unknown role", with("role", json!("admin")), 400),
        ("role and letters", with("letters", json!(["R"])), 400),
        (
            "letters outside CRUDXP",
            json!({"oid": folder, "audience": email(BOB), "letters": ["R", "Z"]}),
            400,
        ),
        (
            "letters as a string",
            json!({"oid": folder, "audience": email(BOB), "letters": "RX"}),
            400,
        ),
        (
            "no letters",
            json!({"oid": folder, "audience": email(BOB), "letters": []}),
            400,
        ),
        (
            "expiry in the past",
            with("expires", json!("2001-01-01T00:00:00Z")),
            400,
        ),
        ("expiry unparsable", with("expires", json!("tomorrow")), 400),
        (
            "unknown field",
            with("expiry", json!("2099-01-01T00:00:00Z")),
            400,
        ),
        (
            "unknown acceptance",
            with("acceptance", json!("maybe")),
            400,
        ),
        (
            "unknown sharing mode",
            with("sharing_mode", json!("everyone")),
            400,
        ),
        (
            "terms too long",
            with("terms", json!("x".repeat(17 << 10))),
            400,
        ),
        (
            "an object that is not there",
            with("oid", json!("00000000000fffff")),
            404,
        ),
    ];
    for (what, body, want) in cases {
        let (s, v) = call(&app, "POST", "/shares", Some(&jane), Some(&body)).await;
        assert_eq!(s, want, "{what}: {v}");
        assert_error_shape(&v, want, None);
        if want == 400 {
            assert_eq!(v["error"]["code"], "bad_share", "{what}");
        }
    }
    let (s, v) = call(
        &app,
        "GET",
        "/shares/incoming?state=lost",
        Some(&jane),
        None,
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_query")));
    let (s, _) = call(&app, "GET", "/shares", Some(&jane), None).await;
    assert_eq!(s, 400);
    let (s, _) = call(&app, "PUT", "/shares/0000000000000001", Some(&jane), None).await;
    assert_eq!(s, 405);
    let (s, _) = call(&app, "POST", "/shares", None, Some(&ok)).await;
    assert_eq!(s, 401);
    let readonly = app.token_for("readonly");
    let (s, _) = call(&app, "POST", "/shares", Some(&readonly), Some(&ok)).await;
    assert_eq!(s, 403);
    assert_eq!(app.fingerprint(), before, "a refused share changes nothing");
    let (s, v) = call(&app, "GET", "/shares/outgoing", Some(&jane), None).await;
    assert_eq!((s, v), (200, json!([])), "and makes no share");
}

#[tokio::test]
async fn the_share_endpoints_answer_under_the_client_prefix_too() {
    let prefix = "/services/gm-data/0.1";
    let app = crate::common::spawn_app_with(&["--client-prefix", prefix]).await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (folder, file) = janes_docs(&app).await;
    let body = json!({"oid": folder, "audience": email(BOB), "role": "reader"});
    let (s, made) = call(
        &app,
        "POST",
        &format!("{prefix}/shares"),
        Some(&jane),
        Some(&body),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    let id = made["id"].as_str().unwrap();
    for p in ["", prefix] {
        let (s, inbox) = call(
            &app,
            "GET",
            &format!("{p}/shares/incoming"),
            Some(&bob),
            None,
        )
        .await;
        assert_eq!((s, inbox[0]["id"].as_str()), (200, Some(id)), "{p}");
        let (s, one) = call(&app, "GET", &format!("{p}/shares/{id}"), Some(&jane), None).await;
        assert_eq!((s, one["state"].as_str()), (200, Some("accepted")), "{p}");
        assert_eq!(
            status(&app, &format!("{p}/props/{file}"), &bob).await,
            200,
            "{p}"
        );
    }
    let (s, _) = call(
        &app,
        "DELETE",
        &format!("{prefix}/shares/{id}"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        status(&app, &format!("{prefix}/props/{file}"), &bob).await,
        404
    );
}

#[tokio::test]
async fn narrowing_a_share_narrows_those_made_through_it_and_new_terms_ask_for_acceptance_again() {
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let (folder, file) = janes_docs(&app).await;
    let bobs = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "writer", "sharing_mode": "anyone"}),
    )
    .await;
    let robs = share(
        &app,
        &bob,
        json!({"oid": folder, "audience": email(ROB), "letters": ["C", "R", "U", "X"]}),
    )
    .await;
    let (bid, rid) = (bobs["id"].as_str().unwrap(), robs["id"].as_str().unwrap());
    let update = json!([{"action": "U", "oid": file, "description": "edited"}]);
    assert_eq!(app.write(Some(&rob), &update).await.status(), 200);

    // Who may change it: the sharer or an owner; a recipient may not, a stranger sees nothing.
    let narrow = json!({"role": "reader", "tstamp": bobs["tstamp"]});
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("/shares/{bid}"),
        Some(&bob),
        Some(&json!({"role": "reader"})),
    )
    .await;
    assert_eq!(s, 403, "a recipient changing a share");
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("/shares/{rid}"),
        Some(&rob),
        Some(&json!({"role": "reader"})),
    )
    .await;
    assert_eq!(s, 403);
    let stranger = app.token(&json!({"label": "eve", "values": {"email": ["eve@x"]}}));
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("/shares/{bid}"),
        Some(&stranger),
        Some(&narrow),
    )
    .await;
    assert_eq!(s, 404);
    for (what, body) in [
        ("nothing", json!({})),
        ("no letters", json!({"letters": []})),
        ("both", json!({"role": "reader", "letters": ["R"]})),
        ("unknown field", json!({"rol": "reader"})),
        ("past expiry", json!({"expires": "2000-01-01T00:00:00Z"})),
    ] {
        let (s, v) = call(
            &app,
            "PATCH",
            &format!("/shares/{bid}"),
            Some(&jane),
            Some(&body),
        )
        .await;
        assert_eq!(s, 400, "{what}: {v}");
    }
    let (s, v) = call(
        &app,
        "PATCH",
        &format!("/shares/{bid}"),
        Some(&jane),
        Some(&json!({"role": "reader", "tstamp": "0000000000000001"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("stale_tstamp"))
    );

    // Narrowed to reader: Rob's share loses C and U with it, in the same transaction.
    let (s, b) = call(
        &app,
        "PATCH",
        &format!("/shares/{bid}"),
        Some(&jane),
        Some(&narrow),
    )
    .await;
    assert_eq!((s, b["letters"].clone()), (200, json!(["R", "X"])), "{b}");
    let (_, r) = call(&app, "GET", &format!("/shares/{rid}"), Some(&rob), None).await;
    assert_eq!(r["letters"], json!(["R", "X"]));
    assert_eq!(app.write(Some(&rob), &update).await.status(), 403);
    assert_eq!(status(&app, &format!("/props/{file}"), &rob).await, 200);
    let (_, log) = call(&app, "GET", &format!("/shares/{rid}/log"), Some(&rob), None).await;
    assert_eq!(log.as_array().unwrap().last().unwrap()["kind"], "changed");
    // Bob may not give Rob more than his own share now has.
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("/shares/{rid}"),
        Some(&bob),
        Some(&json!({"role": "writer"})),
    )
    .await;
    assert_eq!(s, 403);

    // New terms: Bob's share is pending again, and grants nothing, nor does Rob's through it.
    let (s, b) = call(
        &app,
        "PATCH",
        &format!("/shares/{bid}"),
        Some(&jane),
        Some(&json!({"terms": "new terms"})),
    )
    .await;
    assert_eq!(
        (s, b["state"].as_str(), b["acceptance"].as_str()),
        (200, Some("pending"), Some("required"))
    );
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 404);
    assert_eq!(status(&app, &format!("/props/{file}"), &rob).await, 404);
    let (s, _) = call(
        &app,
        "POST",
        &format!("/shares/{bid}/accept"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 200);
    assert_eq!(status(&app, &format!("/props/{file}"), &rob).await, 200);
}

#[tokio::test]
async fn an_objects_rego_share_rule_vetoes_shares_outside_it() {
    let app = spawn_app().await;
    let (root, jane, bob) = (
        app.token_for("root"),
        app.token_for("jane"),
        app.token_for("bob"),
    );
    // SECRET: shared only inside the deciphernow org, and never with more than R and X.
    let rego = format!(
        "package policy\nimport rego.v1\n\
         owner if {{ some e in input.claims.values.email; e == \"{JANE}\" }}\n\
         C := owner\nR := owner\nU := owner\nD := owner\nX := owner\nP := owner\n\
         share if {{\n  input.share.audience.claim == \"org\"\n  \
         input.share.audience.value == \"www.deciphernow.com\"\n  \
         every l in input.share.letters {{ l in {{\"R\", \"X\"}} }}\n}}\n"
    );
    let secret = mkdir(
        &app,
        &root,
        "1",
        "secret",
        Some(json!({"label": "SECRET", "rego": rego})),
    )
    .await;
    let oid = oid_of(&secret);
    for (what, body) in [
        (
            "an email audience",
            json!({"oid": oid, "audience": email(BOB), "role": "reader"}),
        ),
        (
            "another org",
            json!({"oid": oid, "audience": {"claim": "org", "value": "ieee"}, "role": "reader"}),
        ),
        (
            "more letters",
            json!({"oid": oid, "audience": {"claim": "org", "value": "www.deciphernow.com"}, "role": "writer"}),
        ),
    ] {
        let (s, v) = call(&app, "POST", "/shares", Some(&jane), Some(&body)).await;
        assert_eq!(s, 403, "{what}: {v}");
    }
    let ok = share(
        &app,
        &jane,
        json!({"oid": oid, "audience": {"claim": "org", "value": "www.deciphernow.com"}, "role": "reader"}),
    )
    .await;
    assert_eq!(status(&app, &format!("/props/{oid}"), &bob).await, 200);
    // A change is held to the rule too.
    let id = ok["id"].as_str().unwrap();
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("/shares/{id}"),
        Some(&jane),
        Some(&json!({"letters": ["R", "X", "U"]})),
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn share_changes_reach_the_feeds_of_those_they_concern_and_a_revocation_stops_the_objects_events(
) {
    use crate::operator_views::{feed, sse_events};
    let app = spawn_app().await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (folder, file) = janes_docs(&app).await;
    let bob_feed = feed(&app, &bob, &[], "").await;
    let jane_feed = feed(&app, &jane, &[], "").await;

    let offer = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader", "terms": "t"}),
    )
    .await;
    let id = offer["id"].as_str().unwrap();
    let (s, _) = call(
        &app,
        "POST",
        &format!("/shares/{id}/accept"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let edit = |d: &str| json!([{"action": "U", "oid": file, "description": d}]);
    app.write_ok(Some(&jane), &edit("first")).await;
    let (s, _) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(s, 200);
    app.write_ok(Some(&jane), &edit("after the revocation"))
        .await;
    let again = share(
        &app,
        &jane,
        json!({"oid": file, "audience": email(BOB), "role": "reader", "terms": "t2"}),
    )
    .await;

    let got = sse_events(bob_feed, 4).await;
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|(_, ev, d)| {
            let what = if ev == "share" {
                d["kind"].as_str().unwrap().to_string()
            } else {
                d["description"].as_str().unwrap_or_default().to_string()
            };
            (ev.clone(), what)
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("share".to_string(), "offered".to_string()),
            ("U".to_string(), "first".to_string()),
            ("share".to_string(), "revoked".to_string()),
            ("share".to_string(), "offered".to_string()),
        ],
        "Bob hears of the offer, reads the update while shared, then nothing of the object"
    );
    assert_eq!(got[3].2["share"], again["id"]);
    let ids: Vec<&String> = got.iter().map(|(id, _, _)| id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let got = sse_events(jane_feed, 3).await;
    let kinds: Vec<String> = got
        .iter()
        .map(|(_, ev, d)| match ev.as_str() {
            "share" => format!("share {}", d["kind"].as_str().unwrap()),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        ["share accepted", "U", "U"],
        "the sharer hears of the acceptance"
    );
}

pub(crate) fn rfc3339_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[tokio::test]
async fn a_link_is_shown_once_stored_as_a_hash_and_redeemed_within_its_caps() {
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let eve = app.token(&json!({"label": "eve", "values": {"org": ["elsewhere"]}}));
    let (folder, file) = janes_docs(&app).await;
    let link = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": {"link": true}, "role": "reader",
               "max_redemptions": 2, "message": "for the team"}),
    )
    .await;
    let secret = link["secret"]
        .as_str()
        .expect("the secret, this once")
        .to_string();
    assert!(secret.len() >= 43, "{secret}");
    let id = link["id"].as_str().unwrap().to_string();
    let (_, again) = call(&app, "GET", &format!("/shares/{id}"), Some(&jane), None).await;
    assert!(again.get("secret").is_none(), "{again}");
    let (_, log) = call(&app, "GET", &format!("/shares/{id}/log"), Some(&jane), None).await;
    assert!(!log.to_string().contains(&secret));
    let (db, wal) = match crate::common::database_of(&app.data_dir) {
        Some(pg) => (
            crate::common::postgres::database_bytes(pg.url()).await,
            Vec::new(),
        ),
        None => (
            std::fs::read(app.data_dir.join("vellum.db")).unwrap(),
            std::fs::read(app.data_dir.join("vellum.db-wal")).unwrap_or_default(),
        ),
    };
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret itself is never stored"
        );
    }
    // A link reaches no one by itself.
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 404);

    let redeem = |token: String, secret: String| {
        let app = &app;
        async move {
            call(
                app,
                "POST",
                "/shares/redeem",
                Some(&token),
                Some(&json!({"secret": secret})),
            )
            .await
        }
    };
    let (s, bobs) = redeem(bob.clone(), secret.clone()).await;
    assert_eq!(s, 201, "{bobs}");
    assert_eq!(
        (bobs["parent"].as_str(), bobs["state"].as_str()),
        (Some(id.as_str()), Some("accepted"))
    );
    assert_eq!(bobs["audience"], email(BOB));
    assert_eq!(status(&app, &format!("/stream/{file}"), &bob).await, 200);
    let (s, same) = redeem(bob.clone(), secret.clone()).await;
    assert_eq!(
        (s, &same["id"]),
        (200, &bobs["id"]),
        "redeeming twice gives the same share"
    );
    let (s, robs) = redeem(rob.clone(), secret.clone()).await;
    assert_eq!(s, 201, "{robs}");
    let (s, v) = redeem(eve.clone(), secret.clone()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (410, Some("link_gone")),
        "used up: {v}"
    );
    let (s, v) = call(
        &app,
        "POST",
        "/shares/redeem",
        None,
        Some(&json!({"secret": secret})),
    )
    .await;
    assert_eq!(s, 401, "{v}");

    // Revoking the link revokes what was redeemed through it.
    let (s, _) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(s, 200);
    assert_eq!(status(&app, &format!("/stream/{file}"), &bob).await, 404);
    assert_eq!(status(&app, &format!("/stream/{file}"), &rob).await, 404);
    let (s, _) = redeem(bob.clone(), secret.clone()).await;
    assert_eq!(s, 410);

    // An expired link is gone too.
    let soon = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": {"link": true}, "role": "reader", "expires": rfc3339_in(2)}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (s, v) = redeem(rob.clone(), soon["secret"].as_str().unwrap().to_string()).await;
    assert_eq!(s, 410, "{v}");
}

#[tokio::test]
async fn guessing_link_secrets_is_refused_after_a_few_tries() {
    let app = spawn_app().await;
    let (jane, eve) = (
        app.token_for("jane"),
        app.token(&json!({"label": "eve", "values": {"email": ["eve@x"]}})),
    );
    let (folder, _) = janes_docs(&app).await;
    let link = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": {"link": true}, "role": "reader"}),
    )
    .await;
    for i in 0..10 {
        let guess = format!("guess-{i}");
        let (s, _) = call(
            &app,
            "POST",
            "/shares/redeem",
            Some(&eve),
            Some(&json!({"secret": guess})),
        )
        .await;
        assert_eq!(s, 404, "guess {i}");
    }
    // Now even the right secret waits: the attempts stop reaching the store.
    let right = json!({"secret": link["secret"]});
    let (s, v) = call(&app, "POST", "/shares/redeem", Some(&eve), Some(&right)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("too_many_redemptions"))
    );
    // Someone else is not held back by eve's guesses.
    let bob = app.token_for("bob");
    let (s, _) = call(&app, "POST", "/shares/redeem", Some(&bob), Some(&right)).await;
    assert_eq!(s, 201);
    for bad in [
        json!({}),
        json!({"secret": 5}),
        json!({"secret": "x", "more": 1}),
        json!({"secret": ""}),
    ] {
        let (s, _) = call(&app, "POST", "/shares/redeem", Some(&bob), Some(&bad)).await;
        assert!(s == 400 || s == 404, "{bad}: {s}");
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn access_is_explained_for_any_moment_with_the_policy_and_each_share_and_its_chain() {
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let (folder, file) = janes_docs(&app).await;
    let before = app.get_json(&format!("/props/{file}"), Some(&jane)).await.1["tstamp"]
        .as_str()
        .unwrap()
        .to_string();
    let bobs = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "writer", "sharing_mode": "anyone"}),
    )
    .await;
    let robs = share(
        &app,
        &bob,
        json!({"oid": file, "audience": email(ROB), "role": "reader"}),
    )
    .await;
    let (bid, rid) = (bobs["id"].as_str().unwrap(), robs["id"].as_str().unwrap());

    // The caller about themselves.
    let (s, me) = app.get_json(&format!("/access/{file}"), Some(&rob)).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["letters"], json!(["R", "X"]));
    assert_eq!(me["policy"], json!([]));
    assert_eq!(
        me["shares"],
        json!([{"id": rid, "letters": ["R", "X"], "chain": [rid, bid]}])
    );
    let (_, jane_self) = app.get_json(&format!("/access/{file}"), Some(&jane)).await;
    assert_eq!(jane_self["letters"], json!(["C", "R", "U", "D", "X", "P"]));
    assert_eq!(jane_self["shares"], json!([]));

    // An owner about someone else, now and before the shares.
    let bob_claims = enc(&crate::common::claims("bob").to_string());
    let (s, b) = app
        .get_json(&format!("/access/{file}?claims={bob_claims}"), Some(&jane))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["letters"], json!(["C", "R", "U", "X"]));
    assert_eq!(b["shares"][0]["chain"], json!([bid]));
    let (s, b0) = app
        .get_json(
            &format!("/access/{file}?claims={bob_claims}&at={before}"),
            Some(&jane),
        )
        .await;
    assert_eq!(
        (s, b0["letters"].clone(), b0["shares"].clone()),
        (200, json!([]), json!([])),
        "{b0}"
    );

    // After the revocation, the moment before it still shows the share.
    let (_, log) = call(
        &app,
        "GET",
        &format!("/shares/{bid}/log"),
        Some(&jane),
        None,
    )
    .await;
    let offered = log[0]["tstamp"].as_str().unwrap().to_string();
    let (s, _) = call(&app, "DELETE", &format!("/shares/{bid}"), Some(&jane), None).await;
    assert_eq!(s, 200);
    let (_, now) = app
        .get_json(&format!("/access/{file}?claims={bob_claims}"), Some(&jane))
        .await;
    assert_eq!(now["letters"], json!([]));
    let (_, then) = app
        .get_json(
            &format!("/access/{file}?claims={bob_claims}&at={offered}"),
            Some(&jane),
        )
        .await;
    assert_eq!(then["letters"], json!(["C", "R", "U", "X"]), "{then}");

    // Who may ask, and bad questions.
    let jane_claims = enc(&crate::common::claims("jane").to_string());
    let (s, _) = app.get_json(&format!("/access/{file}"), Some(&rob)).await;
    assert_eq!(s, 404, "Rob can no longer read it");
    let bob2 = share(
        &app,
        &jane,
        json!({"oid": file, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    assert_eq!(bob2["state"], "accepted");
    let (s, _) = app
        .get_json(&format!("/access/{file}?claims={jane_claims}"), Some(&bob))
        .await;
    assert_eq!(s, 403, "a reader may not ask about others");
    for q in [
        "claims=notjson",
        "claims=%5B1%5D",
        "at=xyz",
        "user=CN%3Dnobody",
    ] {
        let (s, v) = app
            .get_json(&format!("/access/{file}?{q}"), Some(&jane))
            .await;
        assert_eq!(s, 400, "{q}: {v}");
    }
    let (s, _) = app
        .get_json(
            &format!("/access/{file}?claims={jane_claims}&user=x"),
            Some(&jane),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = app
        .get_json(&format!("/access/{file}?at=1"), Some(&jane))
        .await;
    assert_eq!(s, 404, "the object did not exist then");
    let (s, _) = app.get_json(&format!("/access/{folder}"), None).await;
    assert_eq!(s, 404);
}

/// Jane gets exactly `letters` from the policy; nobody else anything.
fn jane_gets(letters: &[&str]) -> Value {
    let a: Vec<Value> = letters.iter().map(|l| json!({"v": l})).collect();
    json!({
        "label": format!("jane gets {}", letters.join("")),
        "requirements": {"f": "if", "a": [
            {"f": "contains", "a": [{"v": "email"}, {"v": JANE}]},
            {"f": "yield", "a": a}
        ]}
    })
}

#[tokio::test]
async fn the_caps_on_what_a_share_may_grant_hold_case_by_case() {
    let app = spawn_app().await;
    let (root, jane, bob) = (
        app.token_for("root"),
        app.token_for("jane"),
        app.token_for("bob"),
    );
    let all = ["C", "R", "U", "D", "X", "P"];
    let mut n = 0;
    // 1. Made by an owner: letters ⊆ what the policy gives her (U makes her an owner).
    let held: [&[&str]; 3] = [&all, &["R", "U", "X"], &["R", "U"]];
    let asked: [&[&str]; 6] = [&["R"], &["R", "X"], &["U"], &["D"], &["P"], &all];
    for h in held {
        for a in asked {
            let obj = oid_of(&mkdir(&app, &root, "1", &format!("o{n}"), Some(jane_gets(h))).await);
            let body = json!({"oid": obj, "audience": email(BOB), "letters": a});
            let (s, v) = call(&app, "POST", "/shares", Some(&jane), Some(&body)).await;
            let fits = a.iter().all(|l| h.contains(l));
            assert_eq!(
                s,
                if fits { 201 } else { 403 },
                "held {h:?}, asked {a:?}: {v}"
            );
            if fits {
                assert_eq!(v["letters"], json!(a), "never trimmed or widened");
            }
            n += 1;
        }
    }
    // 2. Made through a share: letters ⊆, expiry ≤ and mode no wider than the parent's.
    let parents: [(&[&str], &str); 3] = [
        (&["R", "X"], "anyone"),
        (&["C", "R", "U", "X"], "anyone"),
        (&all, "owner"),
    ];
    let asks: [(&[&str], Option<&str>, u16); 7] = [
        (&["R", "X", "P"], None, 201),
        (&["R"], None, 201),
        (&["R", "X"], Some("2098-06-01T00:00:00Z"), 201),
        (&["R", "X"], Some("2099-06-01T00:00:00Z"), 403), // after the parent's expiry
        (&["U"], None, 201),
        (&["D"], None, 201),
        (&["C", "R", "U", "X"], None, 201),
    ];
    for (p, mode) in parents {
        for (a, expires, want_if_fits) in asks {
            let obj =
                oid_of(&mkdir(&app, &root, "1", &format!("o{n}"), Some(owner_only(JANE))).await);
            share(
                &app,
                &jane,
                json!({"oid": obj, "audience": email(BOB), "letters": p, "sharing_mode": mode,
                       "expires": "2099-01-01T00:00:00Z"}),
            )
            .await;
            let mut body = json!({"oid": obj, "audience": email(ROB), "letters": a});
            if let Some(e) = expires {
                body["expires"] = json!(e);
            }
            let (s, v) = call(&app, "POST", "/shares", Some(&bob), Some(&body)).await;
            let want = if mode == "owner" || !a.iter().all(|l| p.contains(l)) {
                403
            } else {
                want_if_fits
            };
            assert_eq!(
                s, want,
                "parent {p:?} {mode}, asked {a:?} until {expires:?}: {v}"
            );
            if s == 201 {
                assert_eq!(v["letters"], json!(a));
                let until = expires.unwrap_or("2099-01-01T00:00:00Z");
                assert_eq!(v["expires"], until, "an absent expiry is the parent's");
                assert_eq!(v["sharing_mode"], "owner");
            }
            n += 1;
        }
    }
    // A wider mode than an `owner`-mode parent's cannot even be asked for through it, and
    // `anyone` through `anyone` stays possible.
    let obj = oid_of(&mkdir(&app, &root, "1", "modes", Some(owner_only(JANE))).await);
    share(
        &app,
        &jane,
        json!({"oid": obj, "audience": email(BOB), "role": "reader", "sharing_mode": "anyone"}),
    )
    .await;
    let (s, v) = call(
        &app,
        "POST",
        "/shares",
        Some(&bob),
        Some(&json!({"oid": obj, "audience": email(ROB), "role": "reader", "sharing_mode": "anyone"})),
    )
    .await;
    assert_eq!((s, v["sharing_mode"].as_str()), (201, Some("anyone")));
    n += 1;
    // 3. Neither owner nor holder of a share: 403 when they can read it, 404 when not.
    let public = oid_of(&mkdir(&app, &root, "1", "public", Some(everyone(&["R", "X"]))).await);
    let (s, _) = call(
        &app,
        "POST",
        "/shares",
        Some(&bob),
        Some(&json!({"oid": public, "audience": email(ROB), "role": "reader"})),
    )
    .await;
    assert_eq!(s, 403);
    let private = oid_of(&mkdir(&app, &root, "1", "private", Some(owner_only(JANE))).await);
    let (s, _) = call(
        &app,
        "POST",
        "/shares",
        Some(&bob),
        Some(&json!({"oid": private, "audience": email(ROB), "role": "reader"})),
    )
    .await;
    assert_eq!(s, 404);
    n += 2;
    assert!(n >= 40, "{n} cases");
}

#[tokio::test]
async fn a_revocation_three_shares_deep_takes_every_share_below_it() {
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let carol = app.token(&json!({"label": "carol", "values": {"email": ["carol@x"]}}));
    let dave = app.token(&json!({"label": "dave", "values": {"email": ["dave@x"]}}));
    let (folder, file) = janes_docs(&app).await;
    let anyone = |who: &str| json!({"oid": folder, "audience": email(who), "role": "reader", "sharing_mode": "anyone"});
    let s1 = share(&app, &jane, anyone(BOB)).await;
    let s2 = share(&app, &bob, anyone(ROB)).await;
    let s3 = share(&app, &rob, anyone("carol@x")).await;
    let s4 = share(&app, &carol, anyone("dave@x")).await;
    assert_eq!(s4["parent"], s3["id"]);
    for t in [&bob, &rob, &carol, &dave] {
        assert_eq!(status(&app, &format!("/props/{file}"), t).await, 200);
    }
    // Revoking the second takes the third and fourth with it; the first stays.
    let id2 = s2["id"].as_str().unwrap();
    let (s, _) = call(&app, "DELETE", &format!("/shares/{id2}"), Some(&jane), None).await;
    assert_eq!(s, 200);
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 200);
    for t in [&rob, &carol, &dave] {
        assert_eq!(status(&app, &format!("/props/{file}"), t).await, 404);
    }
    for s in [&s2, &s3, &s4] {
        let id = s["id"].as_str().unwrap();
        let (_, v) = call(&app, "GET", &format!("/shares/{id}"), Some(&jane), None).await;
        assert_eq!(v["state"], "revoked", "{id}");
    }
    let id1 = s1["id"].as_str().unwrap();
    let (_, v) = call(&app, "GET", &format!("/shares/{id1}"), Some(&jane), None).await;
    assert_eq!(v["state"], "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_sharing_at_once_lose_no_log_entry_and_each_share_is_its_logs_last_state() {
    let app = std::sync::Arc::new(spawn_app().await);
    let jane = app.token_for("jane");
    let (folder, _) = janes_docs(&app).await;
    let root = app.token_for("root");
    let mut targets = vec![folder.clone()];
    for i in 0..3 {
        targets.push(oid_of(
            &mkdir(
                &app,
                &root,
                &folder,
                &format!("sub{i}"),
                Some(owner_only(JANE)),
            )
            .await,
        ));
    }
    let people: Vec<(String, String)> = (0..8)
        .map(|i| {
            let mail = format!("u{i}@x");
            let token = app.token(&json!({"label": format!("u{i}"), "values": {"email": [mail]}}));
            (mail, token)
        })
        .collect();
    let secs: u64 = std::env::var("VELLUM_SHARE_RACE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..16usize {
        let (app, jane, targets, people) =
            (app.clone(), jane.clone(), targets.clone(), people.clone());
        tasks.push(tokio::spawn(async move {
            // What this client was answered: (id, tstamp, the share as answered).
            let mut seen: Vec<Value> = Vec::new();
            let mut n = c as u64 * 7919;
            let mut next = || {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (n >> 33) as usize
            };
            while tokio::time::Instant::now() < until {
                let (status, v) = if c < 8 {
                    // Sharers: offer, change, revoke.
                    match next() % 4 {
                        0 | 1 => {
                            let who = &people[next() % people.len()].0;
                            let t = &targets[next() % targets.len()];
                            let terms = if next() % 2 == 0 {
                                json!("t")
                            } else {
                                Value::Null
                            };
                            let mut b = json!({"oid": t, "audience": email(who), "role": "reader"});
                            if !terms.is_null() {
                                b["terms"] = terms;
                            }
                            call(&app, "POST", "/shares", Some(&jane), Some(&b)).await
                        }
                        2 => {
                            let (_, mine) = call(
                                &app,
                                "GET",
                                "/shares/outgoing?state=accepted",
                                Some(&jane),
                                None,
                            )
                            .await;
                            let Some(sh) =
                                mine.as_array().and_then(|a| a.get(next() % a.len().max(1)))
                            else {
                                continue;
                            };
                            let id = sh["id"].as_str().unwrap();
                            let b =
                                json!({"message": format!("m{}", next()), "tstamp": sh["tstamp"]});
                            call(
                                &app,
                                "PATCH",
                                &format!("/shares/{id}"),
                                Some(&jane),
                                Some(&b),
                            )
                            .await
                        }
                        _ => {
                            let (_, mine) = call(
                                &app,
                                "GET",
                                "/shares/outgoing?state=pending",
                                Some(&jane),
                                None,
                            )
                            .await;
                            let Some(sh) =
                                mine.as_array().and_then(|a| a.get(next() % a.len().max(1)))
                            else {
                                continue;
                            };
                            let id = sh["id"].as_str().unwrap();
                            call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await
                        }
                    }
                } else {
                    // Recipients: accept or decline what is pending for them.
                    let me = &people[c % people.len()].1;
                    let (_, inbox) = call(
                        &app,
                        "GET",
                        "/shares/incoming?state=pending",
                        Some(me),
                        None,
                    )
                    .await;
                    let Some(sh) = inbox
                        .as_array()
                        .and_then(|a| a.get(next() % a.len().max(1)))
                    else {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        continue;
                    };
                    let id = sh["id"].as_str().unwrap();
                    let what = if next() % 4 == 0 { "decline" } else { "accept" };
                    call(
                        &app,
                        "POST",
                        &format!("/shares/{id}/{what}"),
                        Some(me),
                        None,
                    )
                    .await
                };
                assert!(status < 500, "{status}: {v}");
                if status == 200 || status == 201 {
                    seen.push(v);
                }
            }
            seen
        }));
    }
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert!(
        answered.len() > 100,
        "only {} changes in {secs} s",
        answered.len()
    );
    println!("{} changes answered in {secs} s", answered.len());
    // Every change answered is in its share's log, as answered.
    let mut logs: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for a in &answered {
        let id = a["id"].as_str().unwrap().to_string();
        if !logs.contains_key(&id) {
            let (s, log) = call(&app, "GET", &format!("/shares/{id}/log"), Some(&jane), None).await;
            assert_eq!(s, 200);
            logs.insert(id.clone(), log.as_array().unwrap().clone());
        }
        let log = &logs[&id];
        let entry = log
            .iter()
            .find(|e| e["tstamp"] == a["tstamp"])
            .unwrap_or_else(|| panic!("the change at {} of {id} is not in its log", a["tstamp"]));
        assert_eq!(
            &entry["state"], a,
            "the log holds the share as it was answered"
        );
    }
    // Each share is its log's last state, and each log runs forward.
    for (id, log) in &logs {
        let stamps: Vec<&str> = log.iter().map(|e| e["tstamp"].as_str().unwrap()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{id}: {stamps:?}");
        let (_, now) = call(&app, "GET", &format!("/shares/{id}"), Some(&jane), None).await;
        assert_eq!(&now, &log.last().unwrap()["state"], "{id}");
    }
}

#[tokio::test]
async fn show_lists_an_objects_shares_and_show_shares_the_callers_with_terms_escaped() {
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let (folder, _) = janes_docs(&app).await;
    let offer = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader",
               "terms": "<script>alert(1)</script> no copies", "message": "see <b>this</b>"}),
    )
    .await;
    let page = |path: String, token: String| {
        let app = &app;
        async move {
            let r = app.get(&path, Some(&token)).await;
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, mine) = page("/show/shares".into(), bob.clone()).await;
    assert_eq!(s, 200);
    assert!(mine.contains("id=\"incoming\""), "{mine}");
    assert!(mine.contains("&lt;script&gt;alert(1)&lt;/script&gt; no copies"));
    assert!(!mine.contains("<script>alert"), "terms are escaped");
    assert!(mine.contains("pending") && mine.contains("asjane") && mine.contains("docs"));
    let (_, janes) = page("/show/shares".into(), jane.clone()).await;
    assert!(janes.contains("id=\"outgoing\"") && janes.contains(BOB));
    let (_, robs) = page("/show/shares".into(), rob.clone()).await;
    assert!(robs.contains("Nothing is shared with you.") && !robs.contains(BOB));

    // The folder's page shows its shares to its owner and, once accepted, to the recipient.
    let (s, owner_view) = page(format!("/show/{folder}"), jane.clone()).await;
    assert_eq!(s, 200);
    assert!(owner_view.contains("id=\"shares\"") && owner_view.contains(BOB));
    assert_eq!(page(format!("/show/{folder}"), bob.clone()).await.0, 404);
    let id = offer["id"].as_str().unwrap();
    call(
        &app,
        "POST",
        &format!("/shares/{id}/accept"),
        Some(&bob),
        None,
    )
    .await;
    let (s, bob_view) = page(format!("/show/{folder}"), bob.clone()).await;
    assert_eq!(s, 200);
    assert!(bob_view.contains("id=\"shares\"") && bob_view.contains("accepted"));
    assert_eq!(page(format!("/show/{folder}"), rob.clone()).await.0, 404);
}

/// Runs `vellum SUBCOMMAND ARGS` (an API client) as `token` against `app`; returns the exit
/// code, stdout as JSON (or text) and stderr.
async fn client(
    app: &TestApp,
    token: &str,
    subcommand: &str,
    args: &[&str],
) -> (i32, Value, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vellum"));
    c.arg(subcommand)
        .args(args)
        .env("VELLUM_URL", &app.base)
        .env("VELLUM_TOKEN", token)
        .env_remove("USER_DN");
    // The server answers on this runtime: run the client beside it.
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout));
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn cli(app: &TestApp, token: &str, args: &[&str]) -> (i32, Value, String) {
    client(app, token, "share", args).await
}

#[tokio::test]
async fn vellum_share_creates_lists_answers_and_revokes_from_the_command_line() {
    let app = spawn_app().await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (folder, file) = janes_docs(&app).await;
    let to_bob = format!("email={BOB}");
    let (code, made, err) = cli(
        &app,
        &jane,
        &[
            "create", &folder, "--to", &to_bob, "--role", "reader", "--terms", "be nice",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(made["state"], "pending");
    let id = made["id"].as_str().unwrap().to_string();
    let (code, inbox, _) = cli(&app, &bob, &["list", "--state", "pending"]).await;
    assert_eq!((code, inbox[0]["id"].as_str()), (0, Some(id.as_str())));
    let (code, ok, _) = cli(&app, &bob, &["accept", &id]).await;
    assert_eq!((code, ok["state"].as_str()), (0, Some("accepted")));
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 200);
    let (code, out, _) = cli(&app, &jane, &["list", "outgoing"]).await;
    assert_eq!((code, out.as_array().map(Vec::len)), (0, Some(1)));
    let (code, on, _) = cli(&app, &jane, &["list", "--oid", &file]).await;
    assert_eq!((code, on.as_array().map(Vec::len)), (0, Some(1)));
    let (code, one, _) = cli(&app, &bob, &["show", &id]).await;
    assert_eq!((code, one["terms"].as_str()), (0, Some("be nice")));
    // Refusals are exit 1 with the server's message; bad usage and bad tokens exit 2.
    let (code, _, err) = cli(&app, &jane, &["accept", &id]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("permission_denied"), "{err}");
    let (code, _, _) = cli(
        &app,
        &jane,
        &["create", &folder, "--to", "nonsense", "--role", "reader"],
    )
    .await;
    assert_eq!(code, 2);
    let (code, _, _) = cli(&app, "not-a-token", &["list"]).await;
    assert_eq!(code, 2);
    let t = one["tstamp"].as_str().unwrap();
    let (code, gone, _) = cli(&app, &jane, &["revoke", &id, "--tstamp", t]).await;
    assert_eq!((code, gone["state"].as_str()), (0, Some("revoked")));
    let (code, log, _) = cli(&app, &bob, &["log", &id]).await;
    let changes = log
        .as_array()
        .map(|l| l.iter().filter(|e| e["kind"] != "rotated").count());
    assert_eq!((code, changes), (0, Some(3)));
    // Links.
    let (code, link, _) = cli(
        &app,
        &jane,
        &["create", &folder, "--link", "--letters", "RX"],
    )
    .await;
    assert_eq!(code, 0);
    let secret = link["secret"].as_str().unwrap();
    let (code, mine, _) = cli(&app, &bob, &["redeem", secret]).await;
    assert_eq!((code, mine["parent"].as_str()), (0, link["id"].as_str()));
    let (code, _, _) = cli(&app, &bob, &["decline", mine["id"].as_str().unwrap()]).await;
    assert_eq!(code, 1, "an accepted share cannot be declined, only left");
}

async fn tasks_cli(app: &TestApp, token: &str, args: &[&str]) -> (i32, Value, String) {
    client(app, token, "tasks", args).await
}

#[tokio::test]
async fn vellum_tasks_lists_shows_and_retries_from_the_command_line() {
    // Deliveries to a port nothing listens on fail at their only attempt.
    let app = crate::common::spawn_app_with(&[
        "--share-webhook-url",
        "http://127.0.0.1:9/hook",
        "--share-webhook-secret",
        "s",
        "--task-max-attempts",
        "1",
    ])
    .await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (folder, _) = janes_docs(&app).await;
    share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let failed = loop {
        let (code, list, err) = tasks_cli(&app, &jane, &["list", "--state", "failed"]).await;
        assert_eq!(code, 0, "{err}");
        if let Some(t) = list.as_array().unwrap().first() {
            break t.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(failed["kind"], "webhook");
    assert!(
        failed["report"]
            .as_str()
            .unwrap()
            .contains("could not deliver"),
        "{failed}"
    );
    let id = failed["id"].as_str().unwrap();
    let (code, all, _) = tasks_cli(&app, &jane, &[]).await;
    assert!(
        code == 0 && all.as_array().unwrap().iter().any(|t| t["id"] == id),
        "{all}"
    );
    let (code, one, _) = tasks_cli(&app, &jane, &["show", id]).await;
    assert_eq!((code, one["state"].as_str()), (0, Some("failed")));
    // Someone else's task is not there for Bob; retrying one that is not failed is refused.
    let (code, _, err) = tasks_cli(&app, &bob, &["show", id]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("404"), "{err}");
    let (code, again, err) = tasks_cli(&app, &jane, &["retry", id]).await;
    assert_eq!((code, again["state"].as_str()), (0, Some("todo")), "{err}");
    assert_eq!(again["attempts"], 0);
    let (code, _, err) = tasks_cli(&app, &jane, &["retry", id]).await;
    if code != 0 {
        assert_eq!(code, 1);
        assert!(err.contains("task_not_failed"), "{err}");
    }
    let (code, _, err) = tasks_cli(&app, &jane, &["list", "--state", "lost"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad_query"), "{err}");
    let (code, _, _) = tasks_cli(&app, "not-a-token", &["list"]).await;
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_shares_on_one_object_leave_every_endpoint_working() {
    let app = std::sync::Arc::new(spawn_app().await);
    let jane = app.token_for("jane");
    let (_, file) = janes_docs(&app).await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (app, jane, file) = (app.clone(), jane.clone(), file.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..10_000).step_by(16) {
                let body =
                    json!({"oid": file, "audience": email(&format!("u{i}@x")), "role": "reader"});
                let (s, v) = call(&app, "POST", "/shares", Some(&jane), Some(&body)).await;
                assert_eq!(s, 201, "{v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let u7 = app.token(&json!({"label": "u7", "values": {"email": ["u7@x"]}}));
    assert_eq!(status(&app, &format!("/props/{file}"), &u7).await, 200);
    assert_eq!(status(&app, &format!("/stream/{file}"), &u7).await, 200);
    assert_eq!(
        status(&app, &format!("/props/{file}"), &app.token_for("rob")).await,
        404
    );
    let (s, all) = call(
        &app,
        "GET",
        &format!("/shares?oid={file}"),
        Some(&jane),
        None,
    )
    .await;
    assert_eq!((s, all.as_array().map(Vec::len)), (200, Some(10_000)));
    let (s, mine) = call(&app, "GET", "/shares/incoming", Some(&u7), None).await;
    assert_eq!((s, mine.as_array().map(Vec::len)), (200, Some(1)));
    let page = app.get(&format!("/show/{file}"), Some(&jane)).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("and 9500 more"),
        "the page lists 500 shares and counts the rest"
    );
}

/// Writes `bytes` as a new version of `file`, as `token`.
async fn new_version(app: &TestApp, token: &str, file: &str, bytes: &[u8]) {
    let meta = json!([{"action": "U", "oid": file, "isfile": true}]);
    let (s, v) = status_json(write_parts(app, Some(token), &meta, &[("v", bytes)]).await).await;
    assert_eq!(s, 200, "{v}");
}

async fn body_of(app: &TestApp, path: &str, token: &str) -> (u16, Vec<u8>) {
    let r = app.get(path, Some(token)).await;
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn meeco_terms_accepted_before_anything_is_seen_on_sharing_only_when_allowed_and_revocation_cascades(
) {
    let app = spawn_app().await;
    let (alice, bob) = (app.token_for("jane"), app.token_for("bob"));
    let carlos = app.token(&json!({"label": "carlos", "values": {"email": ["carlos@x"]}}));
    let (_, item) = janes_docs(&app).await;
    // Alice shares the item with Bob under terms; he must accept before he sees anything.
    let offer = share(
        &app,
        &alice,
        json!({"oid": item, "audience": email(BOB), "role": "reader",
               "terms": "for your records only", "sharing_mode": "anyone"}),
    )
    .await;
    let id = offer["id"].as_str().unwrap();
    assert_eq!(body_of(&app, &format!("/stream/{item}"), &bob).await.0, 404);
    call(
        &app,
        "POST",
        &format!("/shares/{id}/accept"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        body_of(&app, &format!("/stream/{item}"), &bob).await,
        (200, b"for your eyes".to_vec())
    );
    // With `anyone`, Bob shares on to Carlos.
    let to_carlos = share(
        &app,
        &bob,
        json!({"oid": item, "audience": email("carlos@x"), "role": "reader"}),
    )
    .await;
    assert_eq!(to_carlos["parent"].as_str(), Some(id));
    // Carlos, under `owner` mode, may not go further.
    let (s, _) = call(
        &app,
        "POST",
        "/shares",
        Some(&carlos),
        Some(&json!({"oid": item, "audience": email(ROB), "role": "reader"})),
    )
    .await;
    assert_eq!(s, 403);
    // Alice updates the item: both read the new version.
    new_version(&app, &alice, &item, b"version two").await;
    for t in [&bob, &carlos] {
        assert_eq!(
            body_of(&app, &format!("/stream/{item}"), t).await,
            (200, b"version two".to_vec())
        );
    }
    // Alice revokes Bob; Carlos loses access with him.
    let (s, _) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&alice), None).await;
    assert_eq!(s, 200);
    for t in [&bob, &carlos] {
        assert_eq!(body_of(&app, &format!("/stream/{item}"), t).await.0, 404);
    }
}

#[tokio::test]
async fn wildland_a_read_only_then_read_write_share_of_a_photos_folder_and_its_revocation() {
    let app = spawn_app().await;
    let (root, jane, bob) = (
        app.token_for("root"),
        app.token_for("jane"),
        app.token_for("bob"),
    );
    let photos = oid_of(&mkdir(&app, &root, "1", "photos", Some(owner_only(JANE))).await);
    for (name, bytes) in [("a.jpg", &b"jpeg a"[..]), ("b.jpg", &b"jpeg b"[..])] {
        let meta = json!([{"action": "C", "parentoid": photos, "name": name, "isfile": true,
                           "objectpolicy": owner_only(JANE)}]);
        let (s, _) =
            status_json(write_parts(&app, Some(&jane), &meta, &[(name, bytes)]).await).await;
        assert_eq!(s, 200);
    }
    let ro = share(
        &app,
        &jane,
        json!({"oid": photos, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    let (s, listing) = app.get_json(&format!("/list/{photos}"), Some(&bob)).await;
    assert_eq!((s, listing.as_array().map(Vec::len)), (200, Some(2)));
    assert_eq!(
        body_of(&app, &format!("/stream/{photos}/b.jpg"), &bob).await,
        (200, b"jpeg b".to_vec())
    );
    let add = json!([{"action": "C", "parentoid": photos, "name": "c.jpg",
                      "objectpolicy": owner_only(JANE), "allowpartialpermissions": true}]);
    assert_eq!(app.write(Some(&bob), &add).await.status(), 403, "read-only");
    let id = ro["id"].as_str().unwrap();
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("/shares/{id}"),
        Some(&jane),
        Some(&json!({"role": "writer"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        app.write(Some(&bob), &add).await.status(),
        200,
        "read-write"
    );
    let (s, _) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(s, 200);
    for path in [
        format!("/list/{photos}"),
        format!("/stream/{photos}/b.jpg"),
        format!("/props/{photos}/c.jpg"),
    ] {
        assert_eq!(status(&app, &path, &bob).await, 404, "{path}");
    }
}

#[tokio::test]
async fn live_mesh_invitations_with_a_role_expiry_and_message_accepted_declined_open_to_anyone_or_expired(
) {
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let eve = app.token(&json!({"label": "eve", "values": {"email": ["eve@x"]}}));
    let (folder, file) = janes_docs(&app).await;
    let week = rfc3339_in(7 * 24 * 3600);
    let invite = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader", "expires": week,
               "message": "here are the notes", "acceptance": "required"}),
    )
    .await;
    assert_eq!(
        (invite["expires"].as_str(), invite["message"].as_str()),
        (Some(week.as_str()), Some("here are the notes"))
    );
    let (s, _) = call(
        &app,
        "POST",
        &format!("/shares/{}/accept", invite["id"].as_str().unwrap()),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(status(&app, &format!("/props/{file}"), &bob).await, 200);
    let to_rob = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(ROB), "role": "reader", "acceptance": "required"}),
    )
    .await;
    let (s, _) = call(
        &app,
        "POST",
        &format!("/shares/{}/decline", to_rob["id"].as_str().unwrap()),
        Some(&rob),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(status(&app, &format!("/props/{file}"), &rob).await, 404);
    // An invitation anyone may accept, taken by a third person.
    let open = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": {"link": true}, "role": "reader"}),
    )
    .await;
    let (s, _) = call(
        &app,
        "POST",
        "/shares/redeem",
        Some(&eve),
        Some(&json!({"secret": open["secret"]})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(status(&app, &format!("/props/{file}"), &eve).await, 200);
    // An invitation that expired before it was accepted.
    let soon = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(ROB), "role": "reader", "acceptance": "required",
               "expires": rfc3339_in(2)}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (s, v) = call(
        &app,
        "POST",
        &format!("/shares/{}/accept", soon["id"].as_str().unwrap()),
        Some(&rob),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("share_closed")),
        "{v}"
    );
    let (_, shown) = call(
        &app,
        "GET",
        &format!("/shares/{}", soon["id"].as_str().unwrap()),
        Some(&rob),
        None,
    )
    .await;
    assert_eq!(shown["state"], "expired");
    assert_eq!(status(&app, &format!("/props/{file}"), &rob).await, 404);
}

#[tokio::test]
async fn polykey_an_org_share_reaches_each_identity_carrying_the_claim_and_their_feeds_until_unshared(
) {
    use crate::operator_views::{feed, sse_events};
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");
    let carol = app.token(&json!({"label": "carol", "values": {"org": ["www.deciphernow.com"], "email": ["carol@x"]}}));
    let rob = app.token_for("rob");
    let (folder, file) = janes_docs(&app).await;
    let feeds = [
        feed(&app, &bob, &[], "").await,
        feed(&app, &carol, &[], "").await,
    ];
    let gestalt = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": {"claim": "org", "value": "www.deciphernow.com"}, "role": "reader"}),
    )
    .await;
    for t in [&bob, &carol] {
        assert_eq!(status(&app, &format!("/props/{file}"), t).await, 200);
    }
    assert_eq!(
        status(&app, &format!("/props/{file}"), &rob).await,
        404,
        "not in the org"
    );
    let id = gestalt["id"].as_str().unwrap();
    let (s, _) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(s, 200);
    for t in [&bob, &carol] {
        assert_eq!(status(&app, &format!("/props/{file}"), t).await, 404);
    }
    for f in feeds {
        let got = sse_events(f, 2).await;
        let kinds: Vec<&str> = got
            .iter()
            .map(|(_, _, d)| d["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["offered", "revoked"]);
        assert!(got
            .iter()
            .all(|(_, ev, d)| ev == "share" && d["share"] == gestalt["id"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_revocations_200_every_request_is_refused_while_a_download_begun_before_ends_whole_or_fails(
) {
    use futures_util::StreamExt;
    let app = spawn_app().await;
    let (jane, bob) = (app.token_for("jane"), app.token_for("bob"));
    let (folder, _) = janes_docs(&app).await;
    let big: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let meta = json!([{"action": "C", "parentoid": folder, "name": "big.bin", "isfile": true,
                       "objectpolicy": owner_only(JANE)}]);
    let (s, v) =
        status_json(write_parts(&app, Some(&jane), &meta, &[("big.bin", &big)]).await).await;
    assert_eq!(s, 200, "{v}");
    let big_oid = oid_of(&v[0]);
    let thumb = json!([{"action": "C", "parentoid": folder, "name": "big.png",
                        "derived": {"oid": big_oid}, "objectpolicy": owner_only(JANE)}]);
    assert_eq!(app.write(Some(&jane), &thumb).await.status(), 200);
    let made = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader"}),
    )
    .await;
    // A download and a listing begin before the revocation.
    let resp = app.get(&format!("/stream/{big_oid}"), Some(&bob)).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    while got.len() < 4 << 20 {
        got.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    let (s, _) = app.get_json(&format!("/list/{folder}"), Some(&bob)).await;
    assert_eq!(s, 200);
    let (s, derived) = app
        .get_json(&format!("/derived/{big_oid}"), Some(&bob))
        .await;
    assert_eq!(
        (s, derived.as_array().map(Vec::len)),
        (200, Some(1)),
        "{derived}"
    );
    let id = made["id"].as_str().unwrap();
    let (s, _) = call(&app, "DELETE", &format!("/shares/{id}"), Some(&jane), None).await;
    assert_eq!(s, 200);
    for path in [
        format!("/props/{big_oid}"),
        format!("/stream/{big_oid}"),
        format!("/list/{folder}"),
        format!("/history/{big_oid}"),
        format!("/show/{big_oid}"),
        format!("/access/{big_oid}"),
    ] {
        assert_eq!(
            status(&app, &path, &bob).await,
            404,
            "{path} after the revocation"
        );
    }
    // /derived never says 404 (it answers for any oid); it simply lists nothing now.
    let (s, derived) = app
        .get_json(&format!("/derived/{big_oid}"), Some(&bob))
        .await;
    assert_eq!((s, derived), (200, json!([])));
    // The download that began before either ends whole and correct, or breaks off: never
    // wrong bytes.
    let mut broke = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    if !broke {
        assert_eq!(got.len(), big.len());
    }
    assert!(
        got[..] == big[..got.len()],
        "every byte received is the file's"
    );
}

/// Who asks, in the access matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Sharer,
    Pending,
    Accepted,
    Stranger,
    Anonymous,
    Readonly,
}

#[tokio::test]
async fn every_share_and_object_endpoint_answers_each_kind_of_caller_as_the_matrix_says() {
    use Who::*;
    let app = spawn_app().await;
    let (jane, bob, rob) = (
        app.token_for("jane"),
        app.token_for("bob"),
        app.token_for("rob"),
    );
    let readonly = app.token_for("readonly");
    let (folder, note) = janes_docs(&app).await;
    let offer = share(
        &app,
        &jane,
        json!({"oid": folder, "audience": email(BOB), "role": "reader", "terms": "t",
               "acceptance": "required"}),
    )
    .await;
    let id = offer["id"].as_str().unwrap().to_string();
    let token = |w: Who| -> Option<&str> {
        match w {
            Sharer => Some(&jane),
            Pending | Accepted => Some(&bob),
            Stranger => Some(&rob),
            Anonymous => None,
            Readonly => Some(&readonly),
        }
    };
    // (method, path, body) → the status for Sharer, Pending, Accepted, Stranger, Anonymous,
    // Readonly. Nothing here changes the store: the writes are refused, or change nothing
    // that matters (a PATCH of the message).
    let upd = json!([{"action": "U", "oid": note, "name": "note.txt"}]);
    let reads: Vec<(&str, String, [u16; 6])> = vec![
        (
            "GET",
            format!("/props/{note}"),
            [200, 404, 200, 404, 404, 404],
        ),
        (
            "GET",
            format!("/list/{folder}"),
            [200, 404, 200, 404, 404, 404],
        ),
        (
            "GET",
            format!("/history/{note}"),
            [200, 404, 200, 404, 404, 404],
        ),
        (
            "GET",
            format!("/stream/{note}"),
            [200, 404, 200, 404, 404, 404],
        ),
        (
            "GET",
            format!("/show/{note}"),
            [200, 404, 200, 404, 404, 404],
        ),
        // Anonymous callers may ask about themselves too: on what they may not read, 404.
        (
            "GET",
            format!("/access/{note}"),
            [200, 404, 200, 404, 404, 404],
        ),
        (
            "GET",
            format!("/shares/{id}"),
            [200, 200, 200, 404, 401, 404],
        ),
        (
            "GET",
            format!("/shares/{id}/log"),
            [200, 200, 200, 404, 401, 404],
        ),
        (
            "GET",
            format!("/shares?oid={folder}"),
            [200, 404, 403, 404, 401, 404],
        ),
        (
            "GET",
            "/shares/incoming".into(),
            [200, 200, 200, 200, 401, 200],
        ),
        (
            "GET",
            "/shares/outgoing".into(),
            [200, 200, 200, 200, 401, 200],
        ),
        (
            "POST",
            format!("/shares/{id}/decline"),
            [403, 0, 409, 404, 401, 404],
        ),
        (
            "POST",
            format!("/shares/{id}/accept"),
            [403, 0, 200, 404, 401, 404],
        ),
        (
            "PATCH",
            format!("/shares/{id}"),
            [200, 403, 403, 404, 401, 403],
        ),
        ("POST", "/shares".into(), [201, 404, 403, 404, 401, 403]),
    ];
    let mut wrong = Vec::new();
    for who in [Sharer, Pending, Accepted, Stranger, Anonymous, Readonly] {
        if who == Accepted {
            let (s, _) = call(
                &app,
                "POST",
                &format!("/shares/{id}/accept"),
                Some(&bob),
                None,
            )
            .await;
            assert_eq!(s, 200);
        }
        let col = [Sharer, Pending, Accepted, Stranger, Anonymous, Readonly]
            .iter()
            .position(|w| *w == who)
            .unwrap();
        for (method, path, want) in &reads {
            let want = want[col];
            if want == 0 {
                continue; // not asked: it would change the state the next columns need
            }
            let body = match (*method, path.as_str()) {
                ("PATCH", _) => Some(json!({"message": "m"})),
                ("POST", "/shares") => {
                    Some(json!({"oid": note, "audience": email("x@y"), "role": "reader"}))
                }
                _ => None,
            };
            let (got, v) = call(&app, method, path, token(who), body.as_ref()).await;
            if got != want {
                wrong.push(format!("{who:?} {method} {path}: {got} (want {want}) {v}"));
            }
            // A stranger learns nothing: no share id, no name, no terms.
            if matches!(who, Stranger | Readonly | Anonymous) && got >= 400 {
                let text = v.to_string();
                assert!(
                    !text.contains("note.txt") && !text.contains("\"t\""),
                    "{who:?} {path}: {text}"
                );
            }
        }
        let (got, _) = status_json(app.write(token(who), &upd).await).await;
        let want = [200, 404, 403, 404, 404, 403][col];
        if got != want {
            wrong.push(format!("{who:?} POST /write U: {got} (want {want})"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
