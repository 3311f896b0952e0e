//! Every bad input to POST /write gets its status and the SPEC §5 error JSON
//! `{"error": {"code", "message", "index"}}`, and leaves the store exactly as it was.
//! Also the lenient side of the wire format: echoed server fields, field names in other
//! cases, empty strings and label-only policies are accepted.

use crate::common;
use crate::common::extra;

use common::{spawn_app, spawn_app_with, TestApp};
use extra::*;
use serde_json::{json, Value};

/// Jane's home (owner-only) with a folder `docs` in it, and bob's home.
struct Fx {
    app: TestApp,
    jane: String,
    bob: String,
    home: String,
    bob_home: String,
    docs: Value,
}

impl Fx {
    fn docs_oid(&self) -> String {
        oid_of(&self.docs)
    }
}

async fn setup() -> Fx {
    setup_on(spawn_app().await).await
}

async fn setup_on(app: TestApp) -> Fx {
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");
    let home = oid_of(&extra::home(&app, &jane, JANE).await);
    let bob_home = oid_of(&extra::home(&app, &bob, BOB).await);
    let docs = mkdir(&app, &jane, &home, "docs", None).await;
    Fx {
        app,
        jane,
        bob,
        home,
        bob_home,
        docs,
    }
}

// ---------------------------------------------------------------------------------------
// The metadata part itself
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn write_returns_400_when_metadata_is_malformed_json() {
    let f = setup().await;
    let body = format!(
        r#"[{{"action": "C", "parentoid": "{}", "name": "x""#,
        f.home
    );
    refused(&f.app, 400, None, f.app.write_raw(Some(&f.jane), body)).await;
}

#[tokio::test]
async fn write_returns_400_when_the_metadata_part_is_empty() {
    let f = setup().await;
    refused(
        &f.app,
        400,
        None,
        f.app.write_raw(Some(&f.jane), String::new()),
    )
    .await;
    refused(
        &f.app,
        400,
        None,
        f.app.write_raw(Some(&f.jane), "  \n ".into()),
    )
    .await;
}

#[tokio::test]
async fn write_returns_400_when_the_event_array_is_empty() {
    let f = setup().await;
    refused(&f.app, 400, None, f.app.write(Some(&f.jane), &json!([]))).await;
}

#[tokio::test]
async fn write_returns_400_when_metadata_is_a_json_string_or_number() {
    let f = setup().await;
    for doc in [json!("hello"), json!(42), json!(true), json!(null)] {
        refused(&f.app, 400, None, f.app.write(Some(&f.jane), &doc)).await;
    }
}

#[tokio::test]
async fn write_returns_400_when_an_event_is_not_an_object() {
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "ok"}, "not an event"]);
    refused(&f.app, 400, Some(1), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_400_when_the_body_is_neither_multipart_nor_json() {
    let f = setup().await;
    let ev = json!([{"action": "C", "parentoid": f.home, "name": "x"}]).to_string();
    refused(
        &f.app,
        400,
        None,
        write_body(&f.app, Some(&f.jane), Some("text/plain"), ev.clone()),
    )
    .await;
    refused(
        &f.app,
        400,
        None,
        write_body(&f.app, Some(&f.jane), None, ev.clone()),
    )
    .await;
    // A multipart content type without a boundary is not multipart either.
    refused(
        &f.app,
        400,
        None,
        write_body(&f.app, Some(&f.jane), Some("multipart/form-data"), ev),
    )
    .await;
}

#[tokio::test]
async fn write_accepts_an_application_json_body() {
    let f = setup().await;
    let ev = json!([{"action": "C", "parentoid": f.home, "name": "viajson"}]).to_string();
    let (s, out) =
        status_json(write_body(&f.app, Some(&f.jane), Some("application/json"), ev).await).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out[0]["name"], "viajson");
}

#[tokio::test]
async fn get_write_returns_405() {
    let f = setup().await;
    let before = f.app.fingerprint();
    let resp = f.app.get("/write", Some(&f.jane)).await;
    let (s, body) = status_json(resp).await;
    assert_eq!(s, 405, "{body}");
    assert_error_shape(&body, 405, None);
    let resp = f
        .app
        .client
        .put(format!("{}/write", f.app.base))
        .header("userpolicy", &f.jane)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(before, f.app.fingerprint());
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn write_returns_400_with_the_index_when_the_action_is_unknown() {
    let f = setup().await;
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "fine"},
        {"action": "Z", "parentoid": f.home, "name": "bad"}
    ]);
    refused(&f.app, 400, Some(1), f.app.write(Some(&f.jane), &body)).await;
    // X and R are letters, not actions.
    for a in ["X", "R", "CREATE", "", "1"] {
        let body = json!([{"action": a, "parentoid": f.home, "name": "bad"}]);
        refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
    }
    let body = json!([{"action": 3, "parentoid": f.home, "name": "bad"}]);
    refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_400_with_the_index_when_the_action_is_missing() {
    let f = setup().await;
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "fine"},
        {"action": "C", "parentoid": f.home, "name": "fine2"},
        {"parentoid": f.home, "name": "no-action"}
    ]);
    refused(&f.app, 400, Some(2), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_400_when_a_create_has_no_parentoid() {
    let f = setup().await;
    let body = json!([{"action": "C", "name": "orphan"}]);
    refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_400_when_an_update_delete_or_purge_names_no_object() {
    let f = setup().await;
    for body in [
        // An upsert needs parentoid and name.
        json!([{"action": "U", "name": "docs", "description": "x"}]),
        json!([{"action": "U", "parentoid": f.home, "description": "x"}]),
        // Delete and purge need an oid.
        json!([{"action": "D", "parentoid": f.home, "name": "docs"}]),
        json!([{"action": "P", "parentoid": f.home, "name": "docs"}]),
        // Ids must be ids.
        json!([{"action": "U", "oid": "docs", "description": "x"}]),
        json!([{"action": "D", "oid": 12}]),
        json!([{"action": "U", "oid": f.docs_oid(), "tstamp": "yesterday"}]),
        json!([{"action": "P", "oid": f.docs_oid(), "purgetstamp": "last"}]),
    ] {
        refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
    }
}

#[tokio::test]
async fn a_child_of_a_folder_made_earlier_in_the_transaction_is_judged_by_that_folders_policy() {
    let f = setup().await;
    // Jane makes a folder she may only read and list, then tries to create inside it.
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "sealed",
         "objectpolicy": everyone(&["R", "X"]), "allowpartialpermissions": true},
        {"action": "C", "name": "inside",
         "references": [{"address": -1, "from": "oid", "to": "parentoid"}]}
    ]);
    refused(&f.app, 403, Some(1), f.app.write(Some(&f.jane), &body)).await;
    // With C for her in the new folder's policy, the same shape goes through.
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "open", "objectpolicy": owner_only(JANE)},
        {"action": "C", "name": "inside",
         "references": [{"address": -1, "from": "oid", "to": "parentoid"}]}
    ]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    assert_eq!(out[1]["parentoid"], out[0]["oid"]);
    assert_eq!(
        out[1]["checkedtstamp"], out[0]["tstamp"],
        "checked against the pending parent"
    );
}

#[tokio::test]
async fn write_returns_400_when_a_create_has_no_name() {
    let f = setup().await;
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "first"},
        {"action": "C", "parentoid": f.home}
    ]);
    refused(&f.app, 400, Some(1), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_400_when_parentoid_is_not_an_oid_or_a_path() {
    let f = setup().await;
    for p in [
        "world/x",
        "not-hex",
        "xyz/1",
        "12345678901234567",
        "1/world/../x",
    ] {
        let body = json!([{"action": "C", "parentoid": p, "name": "x"}]);
        refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
    }
    let body = json!([{"action": "C", "parentoid": 17, "name": "x"}]);
    refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_404_when_the_parentoid_does_not_exist() {
    let f = setup().await;
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "fine"},
        {"action": "C", "parentoid": "00000000deadbeef", "name": "x"}
    ]);
    refused(&f.app, 404, Some(1), f.app.write(Some(&f.jane), &body)).await;
    let body = json!([{"action": "C", "parentoid": "00000000deadbeef/a/b", "name": "x"}]);
    refused(&f.app, 404, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_404_when_the_oid_to_update_or_delete_does_not_exist() {
    let f = setup().await;
    for action in ["U", "D", "P"] {
        let body = json!([{"action": action, "oid": "00000000deadbeef", "name": "x"}]);
        refused(&f.app, 404, Some(0), f.app.write(Some(&f.jane), &body)).await;
    }
}

#[tokio::test]
async fn write_returns_400_when_a_reference_address_is_out_of_range() {
    let f = setup().await;
    // -2 from the second event points before the first.
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "a"},
        {"action": "C", "name": "b", "references": [{"address": -2, "from": "oid", "to": "parentoid"}]}
    ]);
    refused(&f.app, 400, Some(1), f.app.write(Some(&f.jane), &body)).await;
    // 0 is the event itself.
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "a"},
        {"action": "C", "name": "b", "references": [{"address": 0, "from": "oid", "to": "parentoid"}]}
    ]);
    refused(&f.app, 400, Some(1), f.app.write(Some(&f.jane), &body)).await;
    // Positive addresses point forward.
    let body = json!([
        {"action": "C", "name": "b", "references": [{"address": 1, "from": "oid", "to": "parentoid"}]},
        {"action": "C", "parentoid": f.home, "name": "a"}
    ]);
    refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
    // On the first event even -1 is out of range.
    let body = json!([
        {"action": "C", "name": "b", "references": [{"address": -1, "from": "oid", "to": "parentoid"}]}
    ]);
    refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_400_when_reference_field_names_are_bad() {
    let f = setup().await;
    let bad_refs = [
        json!({"address": -1, "from": "bogus", "to": "parentoid"}),
        json!({"address": -1, "from": "oid", "to": "name"}),
        json!({"address": -1, "from": "oid"}),
        json!({"adress": -1, "from": "oid", "to": "parentoid"}),
        json!({"address": "-1", "from": "oid", "to": "parentoid"}),
    ];
    for r in bad_refs {
        let body = json!([
            {"action": "C", "parentoid": f.home, "name": "a"},
            {"action": "C", "name": "b", "references": [r]}
        ]);
        refused(&f.app, 400, Some(1), f.app.write(Some(&f.jane), &body)).await;
    }
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "a"},
        {"action": "C", "name": "b", "references": {"address": -1}}
    ]);
    refused(&f.app, 400, Some(1), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn a_good_reference_still_works_next_to_the_bad_cases() {
    let f = setup().await;
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "a"},
        {"action": "C", "name": "b", "references": [{"address": -1, "from": "oid", "to": "parentoid"}]}
    ]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    assert_eq!(out[1]["parentoid"], out[0]["oid"]);
}

// ---------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn write_returns_400_when_the_lisp_policy_text_does_not_parse() {
    let f = setup().await;
    for text in [
        "(if (contains email \"jane.doe@deciphernow.com\") (yield-all)",
        "(yield R X))",
        "(",
        "(frobnicate email)",
    ] {
        let body = json!([
            {"action": "C", "parentoid": f.home, "name": "ok"},
            {"action": "C", "parentoid": f.home, "name": "p", "originalobjectpolicy": text}
        ]);
        refused(&f.app, 400, Some(1), f.app.write(Some(&f.jane), &body)).await;
    }
}

#[tokio::test]
async fn write_returns_400_when_the_rego_does_not_parse() {
    let f = setup().await;
    for rego in ["package policy C {", "package policy\nR := ", "R { true }"] {
        let body = json!([{"action": "C", "parentoid": f.home, "name": "p",
                           "objectpolicy": {"rego": rego}}]);
        refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
    }
    // The same through originalobjectpolicy, on an update.
    let body = json!([{"action": "U", "oid": f.docs_oid(),
                       "originalobjectpolicy": "package policy\nallow if {"}]);
    refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_400_when_objectpolicy_has_both_requirements_and_rego() {
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "p", "objectpolicy": {
        "requirements": {"f": "yield-all", "a": []},
        "rego": "package policy\nR := true"
    }}]);
    refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_400_when_requirements_use_an_unknown_function() {
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "p", "objectpolicy": {
        "requirements": {"f": "frobnicate", "a": [{"v": "R"}]}
    }}]);
    refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
    // Nested inside a known one.
    let body = json!([{"action": "C", "parentoid": f.home, "name": "p", "objectpolicy": {
        "requirements": {"f": "if", "a": [
            {"f": "no-such-test", "a": [{"v": "email"}, {"v": JANE}]},
            {"f": "yield-all", "a": []}
        ]}
    }}]);
    refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_400_when_objectpolicy_is_not_an_object() {
    let f = setup().await;
    for op in [json!("(yield-all)"), json!(7), json!(["R"])] {
        let body = json!([{"action": "C", "parentoid": f.home, "name": "p", "objectpolicy": op}]);
        refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
    }
}

#[tokio::test]
async fn an_update_that_would_lock_the_writer_out_is_403_unless_partial_permissions_are_allowed() {
    let f = setup().await;
    let docs = f.docs_oid();
    // Jane would be left with R only.
    let body = json!([{"action": "U", "oid": docs, "objectpolicy": everyone(&["R"])}]);
    let err = refused(&f.app, 403, Some(0), f.app.write(Some(&f.jane), &body)).await;
    assert!(!err["code"].as_str().unwrap().is_empty());
    // Lisp text form, same result.
    let body = json!([{"action": "U", "oid": docs, "originalobjectpolicy": "(yield R X)"}]);
    refused(&f.app, 403, Some(0), f.app.write(Some(&f.jane), &body)).await;
    // Keeping U but losing P is a lock-out too.
    let body = json!([{"action": "U", "oid": docs, "objectpolicy": everyone(&["R", "U", "X"])}]);
    refused(&f.app, 403, Some(0), f.app.write(Some(&f.jane), &body)).await;

    // Said on purpose: allowed.
    let body = json!([{"action": "U", "oid": docs, "objectpolicy": everyone(&["R"]),
                       "allowpartialpermissions": true}]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    assert_eq!(
        letters(&out[0]),
        ["R"],
        "the response shows the new letters"
    );
    let (s, props) = f
        .app
        .get_json(&format!("/props/{docs}"), Some(&f.jane))
        .await;
    assert_eq!(s, 200, "{props}");
    assert_eq!(letters(&props), ["R"]);
    // And now jane really cannot update it any more.
    let body = json!([{"action": "U", "oid": docs, "description": "too late"}]);
    refused(&f.app, 403, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn a_create_that_would_lock_the_writer_out_is_403_unless_partial_permissions_are_allowed() {
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "dropbox",
                       "objectpolicy": everyone(&["R", "X"])}]);
    refused(&f.app, 403, Some(0), f.app.write(Some(&f.jane), &body)).await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "dropbox",
                       "objectpolicy": everyone(&["R", "X"]), "allowpartialpermissions": true}]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    assert_eq!(letters(&out[0]), ["R", "X"]);
}

// ---------------------------------------------------------------------------------------
// Conflicts (409)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn write_returns_409_when_tstamp_is_stale_on_update_delete_and_purge() {
    let f = setup().await;
    let docs = f.docs_oid();
    let old = f.docs["tstamp"].as_str().unwrap().to_string();
    let v2 = f
        .app
        .write_ok(
            Some(&f.jane),
            &json!([{"action": "U", "oid": docs, "description": "v2"}]),
        )
        .await;
    let current = v2[0]["tstamp"].as_str().unwrap().to_string();
    assert_ne!(old, current);

    for action in ["U", "D", "P"] {
        let body = json!([
            {"action": "C", "parentoid": f.home, "name": "innocent"},
            {"action": action, "oid": docs, "tstamp": old, "description": "stale"}
        ]);
        let err = refused(&f.app, 409, Some(1), f.app.write(Some(&f.jane), &body)).await;
        assert!(err["message"].is_string());
    }
    // A tstamp that never existed is stale too.
    let body =
        json!([{"action": "U", "oid": docs, "tstamp": "0000000000000002", "description": "x"}]);
    refused(&f.app, 409, Some(0), f.app.write(Some(&f.jane), &body)).await;

    // The current tstamp is accepted.
    let out = f
        .app
        .write_ok(
            Some(&f.jane),
            &json!([{"action": "U", "oid": docs, "tstamp": current, "description": "v3"}]),
        )
        .await;
    assert_eq!(out[0]["description"], "v3");
    assert_eq!(out[0]["checkedtstamp"], current.as_str());
}

#[tokio::test]
async fn sending_props_back_after_someone_else_changed_them_is_409() {
    let f = setup().await;
    let docs = f.docs_oid();
    let (_, mut props) = f
        .app
        .get_json(&format!("/props/{docs}"), Some(&f.jane))
        .await;
    f.app
        .write_ok(
            Some(&f.jane),
            &json!([{"action": "U", "oid": docs, "description": "meanwhile"}]),
        )
        .await;
    props["action"] = json!("U");
    props["description"] = json!("mine");
    refused(
        &f.app,
        409,
        Some(0),
        f.app.write(Some(&f.jane), &json!([props])),
    )
    .await;
}

#[tokio::test]
async fn write_returns_409_when_a_create_duplicates_a_name() {
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "docs"}]);
    let err = refused(&f.app, 409, Some(0), f.app.write(Some(&f.jane), &body)).await;
    assert_eq!(
        err["message"],
        format!("\"docs\" already exists in {}", f.home)
    );
    // Within one transaction.
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "twin"},
        {"action": "C", "parentoid": f.home, "name": "twin"}
    ]);
    let err = refused(&f.app, 409, Some(1), f.app.write(Some(&f.jane), &body)).await;
    assert_eq!(
        err["message"],
        format!("\"twin\" already exists in {}", f.home)
    );
}

/// The store's index of live names decides a create's name when the append runs; a create
/// refused on the writer for another reason still gets the 409 first, as when the name was
/// looked up before anything else.
#[tokio::test]
async fn a_create_of_a_taken_name_is_409_even_when_it_would_also_lock_the_caller_out() {
    let f = setup().await;
    // After an update, so that the writer decides (the rehearsal covers opening creates).
    let touch = json!({"action": "U", "oid": f.docs_oid(), "description": "touched"});
    let named = |name: &str| {
        json!([touch.clone(), {"action": "C", "parentoid": f.home, "name": name,
                               "objectpolicy": everyone(&["R"])}])
    };
    let mut err = Value::Null;
    for (name, status, code) in [
        ("fresh", 403, "would_lock_out"),
        ("docs", 409, "duplicate_name"),
    ] {
        err = refused(
            &f.app,
            status,
            Some(1),
            f.app.write(Some(&f.jane), &named(name)),
        )
        .await;
        assert_eq!(err["code"], code, "the name {name}: {err}");
    }
    assert_eq!(
        err["message"],
        format!("\"docs\" already exists in {}", f.home),
        "{err}"
    );
}

#[tokio::test]
async fn write_returns_409_when_a_rename_duplicates_a_name() {
    let f = setup().await;
    let notes = mkdir(&f.app, &f.jane, &f.home, "notes", None).await;
    let body = json!([{"action": "U", "oid": oid_of(&notes), "name": "docs"}]);
    refused(&f.app, 409, Some(0), f.app.write(Some(&f.jane), &body)).await;
    // A move into a folder that already has the name.
    let other = mkdir(&f.app, &f.jane, &f.home, "other", None).await;
    mkdir(&f.app, &f.jane, &oid_of(&other), "notes", None).await;
    let body = json!([{"action": "U", "oid": oid_of(&notes), "parentoid": oid_of(&other)}]);
    refused(&f.app, 409, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_409_when_a_folder_moves_into_its_own_subtree_or_itself() {
    let f = setup().await;
    let a = oid_of(&mkdir(&f.app, &f.jane, &f.home, "a", None).await);
    let b = oid_of(&mkdir(&f.app, &f.jane, &a, "b", None).await);
    let c = oid_of(&mkdir(&f.app, &f.jane, &b, "c", None).await);
    for target in [&b, &c] {
        let body = json!([{"action": "U", "oid": a, "parentoid": target}]);
        refused(&f.app, 409, Some(0), f.app.write(Some(&f.jane), &body)).await;
    }
    let body = json!([{"action": "U", "oid": a, "parentoid": a}]);
    refused(&f.app, 409, Some(0), f.app.write(Some(&f.jane), &body)).await;
    // By path, too.
    let body = json!([{"action": "U", "oid": a, "parentoid": format!("{a}/b/c")}]);
    refused(&f.app, 409, Some(0), f.app.write(Some(&f.jane), &body)).await;
}

#[tokio::test]
async fn write_returns_409_when_deleting_a_non_empty_folder() {
    let f = setup().await;
    let a = oid_of(&mkdir(&f.app, &f.jane, &f.home, "a", None).await);
    let child = mkdir(&f.app, &f.jane, &a, "child", None).await;
    let body = json!([{"action": "D", "oid": a}]);
    refused(&f.app, 409, Some(0), f.app.write(Some(&f.jane), &body)).await;
    // Once its only child is deleted, the folder is empty: child then folder, one transaction.
    let body = json!([{"action": "D", "oid": oid_of(&child)}, {"action": "D", "oid": a}]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    assert_eq!(out[1]["action"], "D");
}

#[tokio::test]
async fn folders_made_on_the_way_by_a_path_parentoid_need_c_on_their_parent() {
    let f = setup().await;
    let rob = f.app.token_for("rob");
    // Bob may not make jane's missing sub-folders (he cannot even see into her home, so
    // 404 is as right as 403), nor a home for someone else.
    let body =
        json!([{"action": "C", "parentoid": format!("1/world/{JANE}/new/deeper"), "name": "x"}]);
    let before = f.app.fingerprint();
    let (s, b) = status_json(f.app.write(Some(&f.bob), &body).await).await;
    assert!(s == 403 || s == 404, "{s} {b}");
    assert_error_shape(&b, s, Some(0));
    assert_eq!(before, f.app.fingerprint());
    let body =
        json!([{"action": "C", "parentoid": "1/world/nobody@example.com/pics", "name": "x"}]);
    refused(&f.app, 403, Some(0), f.app.write(Some(&rob), &body)).await;
    // Rob makes his own home and a folder in it on the way.
    let body =
        json!([{"action": "C", "parentoid": "1/world/rob.jonhson@aol.com/pics", "name": "x"}]);
    let out = f.app.write_ok(Some(&rob), &body).await;
    let names: Vec<&str> = out.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["x", "rob.jonhson@aol.com", "pics"]);
}

#[tokio::test]
async fn the_root_and_the_namespace_folder_cannot_be_deleted_or_renamed() {
    let f = setup().await;
    let root = f.app.token_for("root");
    let ns = f.app.namespace_oid().await;
    for oid in ["0000000000000001", ns.as_str()] {
        let body = json!([{"action": "U", "oid": oid, "name": "renamed"}]);
        let (s, b) = status_json(f.app.write(Some(&root), &body).await).await;
        assert!(s == 409 || s == 403, "rename of {oid}: {s} {b}");
        assert_error_shape(&b, s, Some(0));
    }
    let body = json!([{"action": "D", "oid": ns}]);
    let before = f.app.fingerprint();
    let (s, b) = status_json(f.app.write(Some(&root), &body).await).await;
    assert!(s == 409 || s == 403, "delete of the namespace: {s} {b}");
    assert_eq!(before, f.app.fingerprint());
}

// ---------------------------------------------------------------------------------------
// Permissions and atomicity
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_transaction_whose_middle_event_is_denied_is_refused_and_applies_nothing() {
    let f = setup().await;
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "first"},
        {"action": "C", "parentoid": f.bob_home, "name": "intruder"},
        {"action": "C", "parentoid": f.home, "name": "third"}
    ]);
    // Bob's home is not Jane's to read: a plain 404, as a read of it would be.
    refused(&f.app, 404, Some(1), f.app.write(Some(&f.jane), &body)).await;
    let (s, _) = f
        .app
        .get_json(&format!("/props/1/world/{JANE}/first"), Some(&f.jane))
        .await;
    assert_eq!(s, 404, "the first event's folder must not exist");
    let (s, list) = f
        .app
        .get_json(&format!("/list/{}", f.home), Some(&f.jane))
        .await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs"]);
    // The same three events with the middle one fixed go through.
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "first"},
        {"action": "C", "parentoid": f.home, "name": "second"},
        {"action": "C", "parentoid": f.home, "name": "third"}
    ]);
    assert_eq!(f.app.write_ok(Some(&f.jane), &body).await.len(), 3);
}

#[tokio::test]
async fn a_later_failure_rolls_back_folders_made_on_the_way_by_a_path_parentoid() {
    let f = setup().await;
    let body = json!([
        {"action": "C", "parentoid": format!("1/world/{JANE}/made/on/the-way"), "name": "leaf"},
        {"action": "C", "parentoid": f.home, "name": "docs"}
    ]);
    refused(&f.app, 409, Some(1), f.app.write(Some(&f.jane), &body)).await;
    let (s, _) = f
        .app
        .get_json(&format!("/props/1/world/{JANE}/made"), Some(&f.jane))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn write_returns_403_for_updates_and_deletes_without_the_letter() {
    let f = setup().await;
    let root = f.app.token_for("root");
    // Readable by everyone, writable by jane only.
    let shared = mkdir(&f.app, &root, "1", "shared", Some(owner_full_ro_all(JANE))).await;
    let shared = oid_of(&shared);
    for body in [
        json!([{"action": "U", "oid": shared, "description": "bob was here"}]),
        json!([{"action": "D", "oid": shared}]),
        json!([{"action": "P", "oid": shared}]),
        json!([{"action": "C", "parentoid": shared, "name": "bobs"}]),
    ] {
        refused(&f.app, 403, Some(0), f.app.write(Some(&f.bob), &body)).await;
    }
    // Anonymous may not write at all here.
    let body = json!([{"action": "C", "parentoid": shared, "name": "anon"}]);
    let (s, b) = status_json(f.app.write(None, &body).await).await;
    assert!(s == 403 || s == 401, "{s} {b}");
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn write_returns_400_for_names_with_a_slash_or_dot_or_dot_dot() {
    let f = setup().await;
    for name in ["a/b", "/", ".", "..", "x\u{0}y"] {
        let body = json!([
            {"action": "C", "parentoid": f.home, "name": "fine"},
            {"action": "C", "parentoid": f.home, "name": name}
        ]);
        refused(&f.app, 400, Some(1), f.app.write(Some(&f.jane), &body)).await;
        let body = json!([{"action": "U", "oid": f.docs_oid(), "name": name}]);
        refused(&f.app, 400, Some(0), f.app.write(Some(&f.jane), &body)).await;
    }
    // Dots inside a name are fine.
    let out = f
        .app
        .write_ok(
            Some(&f.jane),
            &json!([{"action": "C", "parentoid": f.home, "name": "..hidden.txt."}]),
        )
        .await;
    assert_eq!(out[0]["name"], "..hidden.txt.");
}

// ---------------------------------------------------------------------------------------
// File parts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_isfile_event_without_a_file_part_is_400() {
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "timer.go", "isfile": true,
                       "mimetype": "text/plain"}]);
    refused(&f.app, 400, None, f.app.write(Some(&f.jane), &body)).await;
    // Two isfile events, one part: neither count matches.
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "a.txt", "isfile": true},
        {"action": "C", "parentoid": f.home, "name": "b.txt", "isfile": true}
    ]);
    refused(
        &f.app,
        400,
        None,
        write_parts(&f.app, Some(&f.jane), &body, &[("a.txt", b"a")]),
    )
    .await;
    // A file part with no isfile event at all.
    let body = json!([{"action": "C", "parentoid": f.home, "name": "folder"}]);
    refused(
        &f.app,
        400,
        None,
        write_parts(&f.app, Some(&f.jane), &body, &[("x", b"x")]),
    )
    .await;
}

#[tokio::test]
async fn a_file_part_count_that_matches_neither_rule_is_400() {
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "timer.go", "isfile": true}]);
    let err = refused(
        &f.app,
        400,
        None,
        write_parts(
            &f.app,
            Some(&f.jane),
            &body,
            &[("a", b"one".as_slice()), ("b", b"two".as_slice())],
        ),
    )
    .await;
    assert_eq!(err["code"], "part_count");
    let none = refused(
        &f.app,
        400,
        None,
        write_parts(&f.app, Some(&f.jane), &body, &[]),
    )
    .await;
    assert_eq!(none["code"], "part_count");
}

#[tokio::test]
async fn a_wrong_sha256plain_for_an_uploaded_part_is_400() {
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "timer.go", "isfile": true,
                       "sha256plain": sha256_hex("something else")}]);
    let err = refused(
        &f.app,
        400,
        Some(0),
        write_parts(
            &f.app,
            Some(&f.jane),
            &body,
            &[("timer.go", b"package client\n")],
        ),
    )
    .await;
    assert_eq!(err["code"], "sha256_mismatch");
}

#[tokio::test]
async fn a_file_over_max_file_bytes_is_413() {
    let f = setup_on(spawn_app_with(&["--max-file-bytes", "1000"]).await).await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "big", "isfile": true}]);
    let err = refused(
        &f.app,
        413,
        Some(0),
        write_parts(&f.app, Some(&f.jane), &body, &[("big", &[7u8; 1001])]),
    )
    .await;
    assert_eq!(err["code"], "file_too_large");
}

#[tokio::test]
async fn an_unknown_blobalgorithm_is_400() {
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "x", "isfile": true,
                       "blobalgorithm": "rot13"}]);
    refused(
        &f.app,
        400,
        Some(0),
        write_parts(&f.app, Some(&f.jane), &body, &[("x", b"abc")]),
    )
    .await;
}

#[tokio::test]
async fn a_new_file_pointing_at_an_rname_without_a_part_is_400() {
    // Deliberate: gm-data let a create point at any existing blob, which would let a caller
    // read content another object's policy protects.
    let f = setup().await;
    let body = json!([{"action": "C", "parentoid": f.home, "name": "x", "isfile": true,
                       "rname": {"S3": "558/158340da6ed32558"}}]);
    let err = refused(
        &f.app,
        400,
        Some(0),
        write_parts(&f.app, Some(&f.jane), &body, &[]),
    )
    .await;
    assert_eq!(err["code"], "missing_content");
}

// ---------------------------------------------------------------------------------------
// Limits (413)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_policy_over_max_policy_bytes_is_413() {
    // SPEC §5: "413 too large ... Limits (sizes, event counts) are configurable";
    // README: MAX_POLICY_BYTES is one of those limits and 413 is "over a limit".
    let f = setup_on(spawn_app_with(&["--max-policy-bytes", "1024"]).await).await;
    let long = format!(
        "(if (contains email \"{}\") (yield-all) (yield R X))",
        "x".repeat(2000)
    );
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "ok"},
        {"action": "C", "parentoid": f.home, "name": "p", "originalobjectpolicy": long}
    ]);
    refused(&f.app, 413, Some(1), f.app.write(Some(&f.jane), &body)).await;
    let rego = format!(
        "package policy\nR := input.claims.label == \"{}\"",
        "y".repeat(2000)
    );
    let body = json!([{"action": "C", "parentoid": f.home, "name": "p",
                       "objectpolicy": {"rego": rego}}]);
    refused(&f.app, 413, Some(0), f.app.write(Some(&f.jane), &body)).await;
    // Under the limit is fine.
    let short = format!("(if (contains email \"{JANE}\") (yield-all) (yield R X))");
    let body =
        json!([{"action": "C", "parentoid": f.home, "name": "p", "originalobjectpolicy": short}]);
    f.app.write_ok(Some(&f.jane), &body).await;
}

#[tokio::test]
async fn a_metadata_part_over_max_metadata_bytes_is_413() {
    let f = setup_on(spawn_app_with(&["--max-metadata-bytes", "2048"]).await).await;
    let big = json!([{"action": "C", "parentoid": f.home, "name": "big",
                      "description": "x".repeat(4096)}]);
    refused(&f.app, 413, None, f.app.write(Some(&f.jane), &big)).await;
    refused(
        &f.app,
        413,
        None,
        write_body(
            &f.app,
            Some(&f.jane),
            Some("application/json"),
            big.to_string(),
        ),
    )
    .await;
    // Just under the limit is fine.
    let small = json!([{"action": "C", "parentoid": f.home, "name": "small",
                        "description": "x".repeat(1500)}]);
    assert!(small.to_string().len() < 2048);
    f.app.write_ok(Some(&f.jane), &small).await;
    let (_, cfg) = f.app.get_json("/config", None).await;
    assert_eq!(
        cfg["limits"]["max_metadata_bytes"], 2048,
        "limits are reported: {cfg}"
    );
}

#[tokio::test]
async fn more_events_than_max_events_per_write_is_413() {
    let f = setup_on(spawn_app_with(&["--max-events-per-write", "5"]).await).await;
    let events = |n: usize| -> Value {
        Value::Array(
            (0..n)
                .map(|i| json!({"action": "C", "parentoid": f.home, "name": format!("n{n}-{i}")}))
                .collect(),
        )
    };
    refused(&f.app, 413, None, f.app.write(Some(&f.jane), &events(6))).await;
    assert_eq!(f.app.write_ok(Some(&f.jane), &events(5)).await.len(), 5);
    let (_, cfg) = f.app.get_json("/config", None).await;
    assert_eq!(
        cfg["limits"]["max_events_per_write"], 5,
        "limits are reported: {cfg}"
    );
}

// ---------------------------------------------------------------------------------------
// What is accepted
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn echoed_server_fields_are_ignored_not_errors() {
    let f = setup().await;
    let body = json!([{
        "action": "C",
        "parentoid": f.home,
        "name": "echo",
        "tstampend": "0000000000000005",
        "jwthash": "deadbeef",
        "userpolicy": {"label": "mallory"},
        "policy": {"policy": ["C", "R", "U", "D", "X", "P"]},
        "fulldir": "/bogus/",
        "checkedtstamp": "0000000000000007",
        "schemaversion": 99
    }]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    let e = &out[0];
    assert_eq!(e["tstampend"], "7fffffffffffffff");
    assert_eq!(e["jwthash"], sha256_hex(&f.jane));
    assert_eq!(e["userpolicy"], json!({"label": "asjane"}));
    assert_eq!(
        e["fulldir"],
        format!(
            "/0000000000000001/{}/{}/",
            f.app.namespace_oid().await,
            f.home
        )
    );
    let (_, home) = f
        .app
        .get_json(&format!("/props/{}", f.home), Some(&f.jane))
        .await;
    assert_eq!(e["checkedtstamp"], home["tstamp"]);
    assert_eq!(e["schemaversion"], 6);

    // The Python client's way: bob sends his object's whole props back, server fields and
    // all, with junk in some of them.
    let root = f.app.token_for("root");
    let pub_dir = mkdir(&f.app, &root, "1", "pub", Some(owner_full_ro_all(BOB))).await;
    let mut props = f
        .app
        .get_json(&format!("/props/{}", oid_of(&pub_dir)), Some(&f.bob))
        .await
        .1;
    props["action"] = json!("U");
    props["description"] = json!("echoed everything");
    props["schemaversion"] = json!(1);
    props["jwthash"] = json!("0000");
    props["tstampend"] = json!("0000000000000001");
    let out = f.app.write_ok(Some(&f.bob), &json!([props])).await;
    assert_eq!(out[0]["description"], "echoed everything");
    assert_eq!(out[0]["jwthash"], sha256_hex(&f.bob));
    assert_eq!(out[0]["schemaversion"], 6);
    assert_eq!(out[0]["userpolicy"]["label"], "asBob");
}

#[tokio::test]
async fn field_names_are_matched_without_regard_to_case() {
    let f = setup().await;
    let lisp = format!("(if (contains email \"{JANE}\") (yield-all) (yield R X))");
    let body = json!([{
        "ACTION": "C",
        "ParentOID": f.home,
        "Name": "mixed",
        "isFile": false,
        "originalObjectPolicy": lisp,
        "allowPartialPermissions": true,
        "Description": "cases"
    }]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    let e = &out[0];
    assert_eq!(e["name"], "mixed");
    assert_eq!(e["action"], "C");
    assert_eq!(e["parentoid"], f.home.as_str());
    assert_eq!(e["originalobjectpolicy"], lisp.as_str(), "{e}");
    assert!(
        e["objectpolicy"].is_object(),
        "the text form was compiled: {e}"
    );
    assert_ne!(e["isfile"], json!(true));
    // The compiled policy is the one that applies: bob reads (R X) by oid.
    let (s, p) = f
        .app
        .get_json(&format!("/props/{}", oid_of(e)), Some(&f.bob))
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(letters(&p), ["R", "X"]);

    // isFile is seen: true without a part is the counting rule's 400.
    let body = json!([{"Action": "C", "PARENTOID": f.home, "NAME": "f.txt", "isFile": true}]);
    refused(&f.app, 400, None, f.app.write(Some(&f.jane), &body)).await;

    // allowPartialPermissions is seen: a lock-out goes through with it.
    let body = json!([{"Action": "U", "OID": f.docs_oid(), "ObjectPolicy": everyone(&["R"]),
                       "allowPartialPermissions": true}]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    assert_eq!(letters(&out[0]), ["R"]);
}

#[tokio::test]
async fn nested_field_names_in_policies_and_references_are_matched_without_regard_to_case() {
    let f = setup().await;
    // Go's decoder matched struct fields at every level: objectpolicy.requirements and the
    // Lisp nodes' f/a/v, references' address/from/to.
    let body = json!([
        {"action": "C", "parentoid": f.home, "name": "outer",
         "objectPolicy": {"Label": "shouty", "Requirements": {"F": "owner-full-ro-all",
             "A": [{"V": "email"}, {"V": JANE}]}}},
        {"action": "C", "name": "inner",
         "References": [{"Address": -1, "From": "OID", "To": "ParentOid"}]}
    ]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    assert_eq!(
        out[1]["parentoid"], out[0]["oid"],
        "the reference was applied"
    );
    // The policy was understood, not dropped (a dropped one would inherit the owner-only
    // home policy and hide the folder from bob).
    let (s, p) = f
        .app
        .get_json(&format!("/props/{}", oid_of(&out[0])), Some(&f.bob))
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(letters(&p), ["R", "X"]);
    let (s, p) = f
        .app
        .get_json(&format!("/props/{}", oid_of(&out[1])), Some(&f.bob))
        .await;
    assert_eq!(s, 200, "inherited from outer: {p}");
}

#[tokio::test]
async fn an_empty_string_field_counts_as_absent() {
    let f = setup().await;
    let body = json!([{
        "action": "C",
        "parentoid": f.home,
        "name": "blank",
        "oid": "",
        "tstamp": "",
        "mimetype": "",
        "description": "",
        "expiration": "",
        "originalobjectpolicy": "",
        "purgetstamp": "",
        "defaultfile": ""
    }]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    let e = &out[0];
    assert!(e.get("mimetype").is_none(), "{e}");
    assert!(e.get("description").is_none(), "{e}");
    assert!(e.get("originalobjectpolicy").is_none(), "{e}");
    assert!(e.get("defaultfile").is_none(), "{e}");
    assert_eq!(e["expiration"], "7fffffffffffffff");
    assert_eq!(
        e["objectpolicy"], f.docs["objectpolicy"],
        "no policy given: the parent's applies"
    );

    // U with "oid": "" is an upsert by name; "name" stays as looked up.
    let body = json!([{"action": "U", "oid": "", "parentoid": f.home, "name": "docs",
                       "tstamp": "", "description": "upserted"}]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    assert_eq!(out[0]["action"], "U");
    assert_eq!(out[0]["oid"], f.docs["oid"]);
    // An update with "name": "" keeps the name.
    let body = json!([{"action": "U", "oid": f.docs_oid(), "name": "", "description": "kept"}]);
    let out = f.app.write_ok(Some(&f.jane), &body).await;
    assert_eq!(out[0]["name"], "docs");
}

#[tokio::test]
async fn an_objectpolicy_with_neither_requirements_nor_rego_inherits_the_parents() {
    let f = setup().await;
    let root = f.app.token_for("root");
    let parent = mkdir(&f.app, &root, "1", "proj", Some(owner_full_ro_all(JANE))).await;
    let p = oid_of(&parent);
    for (name, op) in [
        ("labelled", json!({"label": "just a label"})),
        ("empty", json!({})),
    ] {
        let out = f
            .app
            .write_ok(
                Some(&f.jane),
                &json!([{"action": "C", "parentoid": p, "name": name, "objectpolicy": op}]),
            )
            .await;
        assert_eq!(
            out[0]["objectpolicy"]["requirements"], parent["objectpolicy"]["requirements"],
            "{name}: {}",
            out[0]
        );
        // Bob gets the parent's R X on it.
        let (s, props) = f
            .app
            .get_json(&format!("/props/{}", oid_of(&out[0])), Some(&f.bob))
            .await;
        assert_eq!(s, 200, "{props}");
        assert_eq!(letters(&props), ["R", "X"]);
    }
    // On an update, a label-only objectpolicy keeps the object's own.
    let docs = f.docs_oid();
    let out = f
        .app
        .write_ok(
            Some(&f.jane),
            &json!([{"action": "U", "oid": docs, "objectpolicy": {"label": "x"}}]),
        )
        .await;
    assert_eq!(
        out[0]["objectpolicy"]["requirements"],
        f.docs["objectpolicy"]["requirements"]
    );
}

/// POST /write as gm-data's Python client sends it from `make_directory_tree`: the
/// metadata as a file part named `file` with the file name `meta` and no Content-Type,
/// Python's `json.dumps` spacing, and the caller by `USER_DN`.
async fn python_client_write(app: &TestApp, meta: &str) -> reqwest::Response {
    let boundary = "8d1b3c0e2f6a4b5c9d7e0f1a2b3c4d5e";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"meta\"\r\n\r\n\
         {meta}\r\n--{boundary}--\r\n"
    );
    app.client
        .post(format!("{}/write", app.base))
        .header("USER_DN", JANE_DN)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_policy_object_in_originalobjectpolicy_is_taken_as_the_policys_json_form() {
    let f = setup().await;
    let policy = format!(
        r#"{{"requirements": {{"f": "owner-full-ro-all", "a": [{{"v": "email"}}, {{"v": "{JANE}"}}]}}}}"#
    );
    let security =
        r##"{"label": "DECIPHER//GMDATA", "foreground": "#FFFFFF", "background": "green"}"##;

    // make_directory_tree(path, object_policy=policy): the same dict in both fields.
    let both = format!(
        r#"[{{"action": "C", "name": "proj", "parentoid": "{}", "isFile": false, "objectpolicy": {policy}, "originalobjectpolicy": {policy}, "security": {security}}}]"#,
        f.home
    );
    let (s, out) = status_json(python_client_write(&f.app, &both).await).await;
    assert_eq!(s, 200, "{out}");
    let proj = &out[0];
    assert_eq!(
        proj["objectpolicy"]["requirements"]["f"], "owner-full-ro-all",
        "{proj}"
    );
    // Only text is ever stored or echoed under originalobjectpolicy.
    assert!(proj.get("originalobjectpolicy").is_none(), "{proj}");
    let (s, props) = f
        .app
        .get_json(&format!("/props/{}", oid_of(proj)), Some(&f.jane))
        .await;
    assert_eq!(s, 200, "{props}");
    assert!(props.get("originalobjectpolicy").is_none(), "{props}");

    // The dict in originalobjectpolicy alone is the policy: bob may read (R X), not write.
    let only = format!(
        r#"[{{"action": "C", "name": "shared", "parentoid": "{}", "isFile": false, "originalobjectpolicy": {policy}, "security": {security}}}]"#,
        f.home
    );
    let (s, out) = status_json(python_client_write(&f.app, &only).await).await;
    assert_eq!(s, 200, "{out}");
    let shared = &out[0];
    assert_eq!(
        shared["objectpolicy"]["requirements"]["a"][1]["v"], JANE,
        "{shared}"
    );
    assert!(shared.get("originalobjectpolicy").is_none(), "{shared}");
    // Bob cannot see jane's home, so he reads the folder by oid.
    let (s, seen) = f
        .app
        .get_json(&format!("/props/{}", oid_of(shared)), Some(&f.bob))
        .await;
    assert_eq!(s, 200, "{seen}");
    assert_eq!(letters(&seen), ["R", "X"]);
}

#[tokio::test]
async fn originalobjectpolicy_that_is_neither_text_nor_an_object_is_400_and_stores_nothing() {
    let f = setup().await;
    for bad in ["42", "true", r#"["(yield R)"]"#] {
        let before = f.app.fingerprint();
        let meta = format!(
            r#"[{{"action": "C", "name": "x", "parentoid": "{}", "originalobjectpolicy": {bad}}}]"#,
            f.home
        );
        let (s, out) = status_json(python_client_write(&f.app, &meta).await).await;
        assert_eq!(s, 400, "{bad}: {out}");
        assert_eq!(out["error"]["code"], "bad_field", "{out}");
        assert!(
            out["error"]["message"]
                .as_str()
                .unwrap()
                .contains("originalobjectpolicy"),
            "{out}"
        );
        assert_eq!(before, f.app.fingerprint(), "{bad} changed the store");
    }
}
