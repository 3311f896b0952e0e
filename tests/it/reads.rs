//! The read side (SPEC §6) and what writes do to it: props, list (paging, filtering),
//! history, derived, self, config, healthz, path addressing, CLIENT_PREFIX, the namespace
//! folder, letters on returned events, expiration, deletes, purges, moves and upserts.

use crate::common;
use crate::common::extra;

use std::collections::HashSet;

use common::{claims, spawn_app, spawn_app_with, TestApp};
use extra::*;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

const ROOT_OID: &str = "0000000000000001";

fn arr(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

fn names(v: &Value) -> Vec<String> {
    arr(v)
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn oids(v: &Value) -> Vec<String> {
    arr(v).iter().map(oid_of).collect()
}

fn name_set(v: &Value) -> HashSet<String> {
    names(v).into_iter().collect()
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn enc(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

async fn ok_json(app: &TestApp, path: &str, token: Option<&str>) -> Value {
    let (s, v) = app.get_json(path, token).await;
    assert_eq!(s, 200, "GET {path}: {v}");
    v
}

async fn status(app: &TestApp, path: &str, token: Option<&str>) -> u16 {
    app.get_json(path, token).await.0
}

/// jane's home folder's oid.
async fn jane_home(app: &TestApp) -> (String, String) {
    let jane = app.token_for("jane");
    let h = home(app, &jane, JANE).await;
    (jane, oid_of(&h))
}

// ---------------------------------------------------------------------------------------
// First start, config, self, healthz
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_root_and_world_exist_at_first_start() {
    let app = spawn_app().await;
    let root = ok_json(&app, "/props/1", None).await;
    assert_eq!(root["oid"], ROOT_OID);
    assert_eq!(root["tstampend"], "7fffffffffffffff");
    let world = ok_json(&app, "/props/1/world", None).await;
    assert_eq!(world["name"], "world");
    assert_eq!(world["parentoid"], ROOT_OID);
    assert_eq!(world["fulldir"], format!("/{ROOT_OID}/"));
    assert_eq!(world["oid"], app.namespace_oid().await.as_str());
    assert_eq!(
        letters(&world),
        ["R", "X"],
        "everyone may see and list /world"
    );
    let list = ok_json(&app, "/list/1", None).await;
    assert_eq!(names(&list), ["world"]);
    let hist = ok_json(&app, "/history/1", None).await;
    assert_eq!(arr(&hist).len(), 1);
    assert_eq!(hist[0]["action"], "C");
    // Only root writes in the root.
    for who in [
        Some(app.token_for("jane")),
        Some(app.token_for("rob")),
        None,
    ] {
        let before = app.fingerprint();
        let body = json!([{"action": "C", "parentoid": "1", "name": "mine"}]);
        let (s, b) = status_json(app.write(who.as_deref(), &body).await).await;
        assert_eq!(s, 403, "{b}");
        assert_eq!(before, app.fingerprint());
    }
    let root = app.token_for("root");
    mkdir(&app, &root, "1", "mine", None).await;
}

#[tokio::test]
async fn config_reports_the_namespace_its_oid_the_userfield_and_limits() {
    let app = spawn_app().await;
    let cfg = ok_json(&app, "/config", None).await;
    assert_eq!(cfg["GMDATA_NAMESPACE"], "world");
    let world = ok_json(&app, "/props/1/world", None).await;
    assert_eq!(cfg["GMDATA_NAMESPACE_OID"], world["oid"]);
    assert_eq!(cfg["GMDATA_NAMESPACE_USERFIELD"], "email");
    let limits = cfg["limits"]
        .as_object()
        .unwrap_or_else(|| panic!("no limits: {cfg}"));
    assert!(!limits.is_empty());
    assert!(
        limits["max_events_per_write"].as_u64().unwrap() > 0,
        "{cfg}"
    );
    assert!(limits["max_metadata_bytes"].as_u64().unwrap() > 0, "{cfg}");
    let schema = cfg
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.to_ascii_lowercase().contains("schema"))
        .map(|(_, v)| v.clone());
    assert_eq!(
        schema,
        Some(json!(6)),
        "the schema version is reported: {cfg}"
    );
}

#[tokio::test]
async fn a_custom_namespace_and_userfield_are_reported_and_used() {
    let app = spawn_app_with(&[
        "--gmdata-namespace",
        "home",
        "--gmdata-namespace-userfield",
        "name",
    ])
    .await;
    let cfg = ok_json(&app, "/config", None).await;
    assert_eq!(cfg["GMDATA_NAMESPACE"], "home");
    assert_eq!(cfg["GMDATA_NAMESPACE_USERFIELD"], "name");
    let ns = ok_json(&app, "/props/1/home", None).await;
    assert_eq!(cfg["GMDATA_NAMESPACE_OID"], ns["oid"]);
    // Jane's `name` claim is "jane fielding".
    let jane = app.token_for("jane");
    let out = mkdir(&app, &jane, &oid_of(&ns), "jane fielding", None).await;
    assert_eq!(out["name"], "jane fielding");
    let err = app
        .write(
            Some(&jane),
            &json!([{"action": "C", "parentoid": oid_of(&ns), "name": JANE}]),
        )
        .await;
    assert_eq!(
        err.status(),
        403,
        "the email is not the configured userfield"
    );
}

#[tokio::test]
async fn self_returns_the_callers_claims() {
    let app = spawn_app().await;
    let me = ok_json(&app, "/self", Some(&app.token_for("jane"))).await;
    assert_eq!(me["label"], "asjane");
    assert_eq!(me["values"], claims("jane")["values"]);
    let me = ok_json(&app, "/self", Some(&app.token_for("rob"))).await;
    assert_eq!(me["label"], "rob.jonhson");
    assert_eq!(me["values"]["email"].as_array().unwrap().len(), 4);
    let me = ok_json(&app, "/self", None).await;
    assert_eq!(me, json!({"label": "anonymous", "values": {}}));
}

#[tokio::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;
    let resp = app.get("/healthz", None).await;
    assert_eq!(resp.status(), 200);
    let resp = app.get("/healthz", Some(&app.token_for("bob"))).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn unknown_oids_and_paths_are_404_and_bad_addresses_are_refused() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    for path in [
        "/props/00000000deadbeef",
        "/list/00000000deadbeef",
        "/history/00000000deadbeef",
        "/props/1/nope",
        "/props/1/world/nobody@nowhere",
        "/list/1/world/nobody@nowhere",
    ] {
        let (s, b) = app.get_json(path, Some(&root)).await;
        assert_eq!(s, 404, "{path}: {b}");
        assert_error_shape(&b, 404, None);
    }
    for path in ["/props/world", "/props/xyz/1", "/derived/not-an-oid"] {
        let (s, b) = app.get_json(path, Some(&root)).await;
        assert!(s == 400 || s == 404, "{path}: {s} {b}");
        assert_error_shape(&b, s, None);
    }
    assert_eq!(status(&app, "/nowhere", None).await, 404);
    let (s, derived) = app.get_json("/derived/00000000deadbeef", Some(&root)).await;
    assert!(
        s == 404 || (s == 200 && derived == json!([])),
        "{s} {derived}"
    );
}

// ---------------------------------------------------------------------------------------
// Letters on returned events
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_returned_event_carries_the_callers_own_letters() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let (jane, home) = jane_home(&app).await;
    let p = ok_json(&app, "/props/1", Some(&root)).await;
    assert_eq!(
        letters(&p),
        ALL_LETTERS,
        "root has every letter on the root"
    );
    let p = ok_json(&app, "/props/1", None).await;
    assert_eq!(
        letters(&p),
        ["R", "X"],
        "anonymous reads and lists the root"
    );
    let p = ok_json(&app, "/props/1", Some(&jane)).await;
    assert_eq!(letters(&p), ["R", "X"]);
    let p = ok_json(&app, &format!("/props/{home}"), Some(&jane)).await;
    assert_eq!(letters(&p), ALL_LETTERS, "jane has everything in her home");
    let p = ok_json(&app, &format!("/props/{home}"), Some(&root)).await;
    assert_eq!(letters(&p), ALL_LETTERS);

    // In listings and history too, per caller.
    let shared = mkdir(&app, &root, "1", "shared", Some(owner_full_ro_all(JANE))).await;
    let l = ok_json(&app, "/list/1", Some(&jane)).await;
    let s = arr(&l).iter().find(|e| e["name"] == "shared").unwrap();
    assert_eq!(letters(s), ALL_LETTERS);
    let l = ok_json(&app, "/list/1", Some(&app.token_for("bob"))).await;
    let s = arr(&l).iter().find(|e| e["name"] == "shared").unwrap();
    assert_eq!(letters(s), ["R", "X"]);
    let h = ok_json(&app, &format!("/history/{}", oid_of(&shared)), None).await;
    assert_eq!(letters(&h[0]), ["R", "X"]);
    // The write response carries the writer's letters.
    assert_eq!(letters(&shared), ALL_LETTERS);
}

// ---------------------------------------------------------------------------------------
// Listings
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn list_pages_of_10_over_25_children_give_10_10_5_without_gaps_or_duplicates() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let big = oid_of(&mkdir(&app, &root, "1", "big", None).await);
    let events: Vec<Value> = (0..25)
        .map(|i| json!({"action": "C", "parentoid": big, "name": format!("child-{i:02}")}))
        .collect();
    let made = app.write_ok(Some(&root), &Value::Array(events)).await;
    let made_oids: HashSet<String> = made.iter().map(oid_of).collect();
    assert_eq!(made_oids.len(), 25);

    let full = ok_json(&app, &format!("/list/{big}"), None).await;
    let full_oids = oids(&full);
    assert_eq!(full_oids.len(), 25);
    let mut sorted = full_oids.clone();
    sorted.sort();
    assert_eq!(full_oids, sorted, "a listing is ordered by oid");
    assert_eq!(full_oids.iter().cloned().collect::<HashSet<_>>(), made_oids);

    let mut paged = Vec::new();
    let mut sizes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => format!("/list/{big}?limit=10"),
            Some(a) => format!("/list/{big}?limit=10&after={a}"),
        };
        let page = ok_json(&app, &path, None).await;
        let page_oids = oids(&page);
        sizes.push(page_oids.len());
        if page_oids.is_empty() {
            break;
        }
        after = page_oids.last().cloned();
        paged.extend(page_oids);
        assert!(sizes.len() < 10, "paging does not end: {sizes:?}");
    }
    assert_eq!(sizes, [10, 10, 5, 0]);
    assert_eq!(paged, full_oids, "pages concatenate to the whole listing");

    // `after` alone, and a limit larger than what is left.
    let rest = ok_json(&app, &format!("/list/{big}?after={}", full_oids[19]), None).await;
    assert_eq!(oids(&rest), full_oids[20..]);
    let all = ok_json(&app, &format!("/list/{big}?limit=1000"), None).await;
    assert_eq!(oids(&all), full_oids);
    let (s, b) = app.get_json(&format!("/list/{big}?limit=ten"), None).await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test]
async fn a_listing_shows_only_the_children_the_caller_may_read() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");
    let mixed = oid_of(&mkdir(&app, &root, "1", "mixed", None).await);
    mkdir(&app, &root, &mixed, "public", Some(everyone(&["R", "X"]))).await;
    mkdir(&app, &root, &mixed, "janes", Some(owner_only(JANE))).await;
    mkdir(&app, &root, &mixed, "bobs", Some(owner_only(BOB))).await;
    mkdir(&app, &root, &mixed, "list-only", Some(everyone(&["X"]))).await;
    let rego = format!(
        "package policy\nimport rego.v1\nR := true if {{ some e in input.claims.values.email; e == \"{BOB}\" }}\nX := R"
    );
    mkdir(
        &app,
        &root,
        &mixed,
        "bobs-rego",
        Some(json!({"rego": rego})),
    )
    .await;

    let path = format!("/list/{mixed}");
    assert_eq!(
        name_set(&ok_json(&app, &path, Some(&jane)).await),
        set(&["public", "janes"])
    );
    assert_eq!(
        name_set(&ok_json(&app, &path, Some(&bob)).await),
        set(&["public", "bobs", "bobs-rego"])
    );
    assert_eq!(
        name_set(&ok_json(&app, &path, None).await),
        set(&["public"])
    );
    assert_eq!(
        name_set(&ok_json(&app, &path, Some(&root)).await),
        set(&["public", "janes", "bobs", "list-only", "bobs-rego"])
    );

    // Paging counts what the caller sees: jane's pages of one.
    let p1 = ok_json(&app, &format!("{path}?limit=1"), Some(&jane)).await;
    assert_eq!(names(&p1), ["public"]);
    let p2 = ok_json(
        &app,
        &format!("{path}?limit=1&after={}", oids(&p1)[0]),
        Some(&jane),
    )
    .await;
    assert_eq!(names(&p2), ["janes"]);
    let p3 = ok_json(
        &app,
        &format!("{path}?limit=1&after={}", oids(&p2)[0]),
        Some(&jane),
    )
    .await;
    assert_eq!(names(&p3), Vec::<String>::new());
}

#[tokio::test]
async fn list_of_a_folder_the_caller_may_read_but_not_execute_is_403_and_neither_is_404() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let jane = app.token_for("jane");
    let r_only = oid_of(&mkdir(&app, &root, "1", "r-only", Some(everyone(&["R"]))).await);
    let hidden = oid_of(&mkdir(&app, &root, "1", "hidden", Some(owner_only(BOB))).await);
    mkdir(&app, &root, &r_only, "inside", None).await;

    let (s, b) = app.get_json(&format!("/list/{r_only}"), Some(&jane)).await;
    assert_eq!(s, 403, "{b}");
    assert_error_shape(&b, 403, None);
    assert_eq!(
        status(&app, &format!("/props/{r_only}"), Some(&jane)).await,
        200
    );
    let (s, b) = app.get_json(&format!("/list/{hidden}"), Some(&jane)).await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(
        status(&app, &format!("/props/{hidden}"), Some(&jane)).await,
        404
    );
    assert_eq!(
        status(&app, &format!("/history/{hidden}"), Some(&jane)).await,
        404
    );
    // Its owner lists it.
    assert_eq!(
        status(
            &app,
            &format!("/list/{hidden}"),
            Some(&app.token_for("bob"))
        )
        .await,
        200
    );
}

// ---------------------------------------------------------------------------------------
// History and derived
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn history_shows_only_the_versions_whose_own_policy_grants_read() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let bob = app.token_for("bob");
    let v1 = mkdir(&app, &root, "1", "diary", Some(owner_full_ro_all(JANE))).await;
    let oid = oid_of(&v1);
    let jane = app.token_for("jane");
    let v2 = app
        .write_one(
            Some(&jane),
            json!({"action": "U", "oid": oid, "objectpolicy": owner_only(JANE)}),
        )
        .await;
    let v3 = app
        .write_one(
            Some(&jane),
            json!({"action": "U", "oid": oid, "description": "still private"}),
        )
        .await;

    let full = ok_json(&app, &format!("/history/{oid}"), Some(&jane)).await;
    let stamps: Vec<&Value> = arr(&full).iter().map(|e| &e["tstamp"]).collect();
    assert_eq!(
        stamps,
        [&v1["tstamp"], &v2["tstamp"], &v3["tstamp"]],
        "oldest first"
    );
    assert_eq!(full[0]["tstampend"], v2["tstamp"]);
    assert_eq!(full[1]["tstampend"], v3["tstamp"]);
    assert_eq!(full[2]["tstampend"], "7fffffffffffffff");

    for who in [None, Some(bob.as_str())] {
        let h = ok_json(&app, &format!("/history/{oid}"), who).await;
        assert_eq!(arr(&h).len(), 1, "only the public version: {h}");
        assert_eq!(h[0]["tstamp"], v1["tstamp"]);
        assert_eq!(h[0]["action"], "C");
        assert_eq!(
            h[0]["tstampend"], v2["tstamp"],
            "it still ends where the next began"
        );
        assert_eq!(status(&app, &format!("/props/{oid}"), who).await, 404);
    }

    // Public again: anonymous sees versions 1 and 4.
    let v4 = app
        .write_one(
            Some(&jane),
            json!({"action": "U", "oid": oid, "objectpolicy": owner_full_ro_all(JANE)}),
        )
        .await;
    let h = ok_json(&app, &format!("/history/{oid}"), None).await;
    let stamps: Vec<&Value> = arr(&h).iter().map(|e| &e["tstamp"]).collect();
    assert_eq!(stamps, [&v1["tstamp"], &v4["tstamp"]]);
}

#[tokio::test]
async fn derived_lists_the_current_events_that_name_an_oid_as_their_origin() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let doc = oid_of(&mkdir(&app, &jane, &home, "report.doc", None).await);
    let out = app
        .write_ok(
            Some(&jane),
            &json!([
                {"action": "C", "parentoid": home, "name": "report.pdf",
                 "derived": {"oid": doc, "type": "doc-to-pdf"}},
                {"action": "C", "parentoid": home, "name": "report.txt", "derived": {"oid": doc}},
                {"action": "C", "parentoid": home, "name": "unrelated", "derived": {}}
            ]),
        )
        .await;
    assert_eq!(out[0]["derived"], json!({"oid": doc, "type": "doc-to-pdf"}));
    let d = ok_json(&app, &format!("/derived/{doc}"), Some(&jane)).await;
    assert_eq!(name_set(&d), set(&["report.pdf", "report.txt"]));
    assert!(arr(&d).iter().all(|e| e["derived"]["oid"] == doc.as_str()));
    assert!(arr(&d).iter().all(|e| letters(e) == ALL_LETTERS));
    // Only what the caller may read: jane's home is owner-only.
    let d = ok_json(
        &app,
        &format!("/derived/{doc}"),
        Some(&app.token_for("bob")),
    )
    .await;
    assert_eq!(d, json!([]));
    // A deleted derivative drops out.
    app.write_ok(
        Some(&jane),
        &json!([{"action": "D", "oid": oid_of(&out[1])}]),
    )
    .await;
    let d = ok_json(&app, &format!("/derived/{doc}"), Some(&jane)).await;
    assert_eq!(names(&d), ["report.pdf"]);
}

// ---------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn paths_with_percent_encoded_names_address_objects() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let names_made = [
        "my docs",
        "café ☕",
        "50%+rest",
        "a+b",
        "日本語 ファイル",
        "q?x#y",
    ];
    let mut made = Vec::new();
    for n in names_made {
        made.push(mkdir(&app, &jane, &home, n, None).await);
    }
    let base = format!("/props/1/world/{}", enc(JANE));
    for (n, e) in names_made.iter().zip(&made) {
        let p = ok_json(&app, &format!("{base}/{}", enc(n)), Some(&jane)).await;
        assert_eq!(p["name"], *n);
        assert_eq!(p["oid"], e["oid"]);
    }
    // Unencoded-but-legal forms too: '@' and '+' are literal in a path.
    let p = ok_json(&app, &format!("/props/1/world/{JANE}/a+b"), Some(&jane)).await;
    assert_eq!(p["name"], "a+b");
    // Nested, and through list and history.
    let inner = mkdir(&app, &jane, &oid_of(&made[0]), "inner dir", None).await;
    let p = ok_json(&app, &format!("{base}/my%20docs/inner%20dir"), Some(&jane)).await;
    assert_eq!(p["oid"], inner["oid"]);
    let l = ok_json(
        &app,
        &format!("/list/1/world/{}/my%20docs", enc(JANE)),
        Some(&jane),
    )
    .await;
    assert_eq!(names(&l), ["inner dir"]);
    let h = ok_json(
        &app,
        &format!("/history/1/world/{}/caf%C3%A9%20%E2%98%95", enc(JANE)),
        Some(&jane),
    )
    .await;
    assert_eq!(h[0]["name"], "café ☕");
    // Starting from any oid.
    let p = ok_json(
        &app,
        &format!("/props/{}/inner%20dir", oid_of(&made[0])),
        Some(&jane),
    )
    .await;
    assert_eq!(p["oid"], inner["oid"]);
    // A path parentoid on a write takes the same names.
    let out = app
        .write_ok(
            Some(&jane),
            &json!([{"action": "C", "parentoid": format!("1/world/{JANE}/café ☕"), "name": "x"}]),
        )
        .await;
    assert_eq!(out[0]["parentoid"], made[1]["oid"]);
}

#[tokio::test]
async fn a_path_through_a_folder_the_caller_cannot_execute_is_404() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let bob = app.token_for("bob");
    let pubdir = mkdir(&app, &jane, &home, "pub", Some(owner_full_ro_all(JANE))).await;
    // Bob may read `pub` by oid, but cannot walk through jane's owner-only home.
    let p = ok_json(&app, &format!("/props/{}", oid_of(&pubdir)), Some(&bob)).await;
    assert_eq!(letters(&p), ["R", "X"]);
    assert_eq!(
        status(&app, &format!("/props/1/world/{JANE}/pub"), Some(&bob)).await,
        404
    );
    assert_eq!(
        status(&app, &format!("/props/1/world/{JANE}/pub"), Some(&jane)).await,
        200
    );
}

#[tokio::test]
async fn client_prefix_serves_reads_and_writes_under_the_prefix_and_at_the_root() {
    let prefix = "/services/gm-data/0.1";
    let app = spawn_app_with(&["--client-prefix", prefix]).await;
    let jane = app.token_for("jane");
    for p in ["", prefix] {
        let r = ok_json(&app, &format!("{p}/props/1"), None).await;
        assert_eq!(r["oid"], ROOT_OID, "{p}");
        let cfg = ok_json(&app, &format!("{p}/config"), None).await;
        assert_eq!(cfg["GMDATA_NAMESPACE"], "world");
        let l = ok_json(&app, &format!("{p}/list/1"), None).await;
        assert_eq!(names(&l), ["world"]);
        let me = ok_json(&app, &format!("{p}/self"), Some(&jane)).await;
        assert_eq!(me["label"], "asjane");
        assert_eq!(status(&app, &format!("{p}/healthz"), None).await, 200);
        let h = ok_json(&app, &format!("{p}/history/1/world"), None).await;
        assert_eq!(arr(&h).len(), 1);
    }
    // A write under the prefix...
    let ns = app.namespace_oid().await;
    let post = |path: String, body: Value| {
        let form = reqwest::multipart::Form::new()
            .part("metadata", reqwest::multipart::Part::text(body.to_string()));
        app.client
            .post(format!("{}{path}", app.base))
            .header("userpolicy", &jane)
            .multipart(form)
            .send()
    };
    let (s, out) = status_json(
        post(
            format!("{prefix}/write"),
            json!([{"action": "C", "parentoid": ns, "name": JANE}]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    let home = oid_of(&out[0]);
    // ... and one at the root.
    let (s, out) = status_json(
        post(
            "/write".into(),
            json!([{"action": "C", "parentoid": home, "name": "rooted"}]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    // Both are visible both ways.
    for p in ["", prefix] {
        let l = ok_json(&app, &format!("{p}/list/1/world/{JANE}"), Some(&jane)).await;
        assert_eq!(names(&l), ["rooted"], "{p}");
        let e = ok_json(&app, &format!("{p}/props/{home}"), Some(&jane)).await;
        assert_eq!(e["name"], JANE);
    }
    // Only the exact prefix: a look-alike is not stripped.
    assert_eq!(
        status(&app, "/services/gm-data/0.1x/props/1", None).await,
        404
    );
}

// ---------------------------------------------------------------------------------------
// The namespace folder and home folders
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn in_world_a_caller_may_create_exactly_the_folder_named_after_their_email() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");
    let ns = app.namespace_oid().await;
    let c = |name: &str| json!([{"action": "C", "parentoid": ns, "name": name}]);

    let before = app.fingerprint();
    let (s, b) = status_json(
        app.write(Some(&jane), &c("someone.else@deciphernow.com"))
            .await,
    )
    .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = status_json(app.write(Some(&jane), &c("jane")).await).await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = status_json(app.write(Some(&bob), &c(JANE)).await).await;
    assert_eq!(s, 403, "bob cannot create jane's: {b}");
    let (s, b) = status_json(app.write(None, &c(JANE)).await).await;
    assert_eq!(s, 403, "anonymous has no email: {b}");
    assert_eq!(before, app.fingerprint());

    let out = app.write_ok(Some(&jane), &c(JANE)).await;
    assert_eq!(out[0]["name"], JANE);
    assert_eq!(out[0]["parentoid"], ns.as_str());
    let before = app.fingerprint();
    let (s, b) = status_json(app.write(Some(&jane), &c(JANE)).await).await;
    assert_eq!(s, 409, "a second one with the same name: {b}");
    assert_error_shape(&b, 409, Some(0));
    let (s, b) = status_json(app.write(Some(&bob), &c(JANE)).await).await;
    assert_eq!(s, 403, "bob still cannot: {b}");
    assert_eq!(before, app.fingerprint());
    // By path too, and bob makes his own.
    let out = app
        .write_ok(
            Some(&bob),
            &json!([{"action": "C", "parentoid": "1/world", "name": BOB}]),
        )
        .await;
    assert_eq!(out[0]["parentoid"], ns.as_str());
    let root = app.token_for("root");
    let l = ok_json(&app, "/list/1/world", Some(&root)).await;
    assert_eq!(name_set(&l), set(&[JANE, BOB]));
    // Everyone may list /world, but sees only the homes it may read.
    let l = ok_json(&app, "/list/1/world", Some(&jane)).await;
    assert_eq!(names(&l), [JANE]);
    let l = ok_json(&app, "/list/1/world", None).await;
    assert_eq!(names(&l), Vec::<String>::new());
}

#[tokio::test]
async fn a_home_folder_created_without_a_policy_is_owner_only() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let bob = app.token_for("bob");
    let p = ok_json(&app, &format!("/props/{home}"), Some(&jane)).await;
    assert_eq!(letters(&p), ALL_LETTERS);
    let child = mkdir(&app, &jane, &home, "inside", None).await;
    for who in [Some(bob.as_str()), None] {
        for path in [
            format!("/props/{home}"),
            format!("/list/{home}"),
            format!("/history/{home}"),
            format!("/props/1/world/{JANE}"),
            format!("/props/{}", oid_of(&child)),
        ] {
            assert_eq!(status(&app, &path, who).await, 404, "{path} as {who:?}");
        }
    }
    // Bob cannot write into it either, and learns no more than a read would tell him.
    let before = app.fingerprint();
    let (s, _) = status_json(
        app.write(
            Some(&bob),
            &json!([{"action": "C", "parentoid": home, "name": "bobs"}]),
        )
        .await,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(before, app.fingerprint());
    // Root sees it.
    let root = app.token_for("root");
    assert_eq!(
        names(&ok_json(&app, &format!("/list/{home}"), Some(&root)).await),
        ["inside"]
    );
}

// ---------------------------------------------------------------------------------------
// Expiration, delete, purge
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_expiration_in_the_past_makes_props_404_and_hides_it_from_listings() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let past = hex16(now_ns() - 60_000_000_000);
    let future = hex16(now_ns() + 3_600_000_000_000);
    // Far enough ahead that a loaded machine still reads it before it expires.
    let soon_ns = now_ns() + 6_000_000_000;
    let soon = hex16(soon_ns);
    let out = app
        .write_ok(
            Some(&jane),
            &json!([
                {"action": "C", "parentoid": home, "name": "old", "expiration": past},
                {"action": "C", "parentoid": home, "name": "later", "expiration": future},
                {"action": "C", "parentoid": home, "name": "soon", "expiration": soon},
                {"action": "C", "parentoid": home, "name": "forever"}
            ]),
        )
        .await;
    assert_eq!(out[0]["expiration"], past.as_str());
    assert_eq!(
        status(&app, &format!("/props/{}", oid_of(&out[0])), Some(&jane)).await,
        404
    );
    assert_eq!(
        status(&app, &format!("/props/1/world/{JANE}/old"), Some(&jane)).await,
        404
    );
    assert_eq!(
        status(&app, &format!("/props/{}", oid_of(&out[1])), Some(&jane)).await,
        200
    );
    let l = ok_json(&app, &format!("/list/{home}"), Some(&jane)).await;
    assert_eq!(name_set(&l), set(&["later", "soon", "forever"]));

    // Expiry is judged when reading.
    let wait = soon_ns.saturating_sub(now_ns()) + 500_000_000;
    tokio::time::sleep(std::time::Duration::from_nanos(wait)).await;
    let l = ok_json(&app, &format!("/list/{home}"), Some(&jane)).await;
    assert_eq!(name_set(&l), set(&["later", "forever"]));
    assert_eq!(
        status(&app, &format!("/props/{}", oid_of(&out[2])), Some(&jane)).await,
        404
    );

    // An update can expire an object too.
    app.write_ok(
        Some(&jane),
        &json!([{"action": "U", "oid": oid_of(&out[3]), "expiration": past}]),
    )
    .await;
    assert_eq!(
        status(&app, &format!("/props/{}", oid_of(&out[3])), Some(&jane)).await,
        404
    );
    let l = ok_json(&app, &format!("/list/{home}"), Some(&jane)).await;
    assert_eq!(names(&l), ["later"]);
}

#[tokio::test]
async fn a_deleted_folder_is_404_for_props_and_list_but_history_still_shows_it() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let made = mkdir(&app, &jane, &home, "trash-me", None).await;
    let oid = oid_of(&made);
    let del = app
        .write_ok(Some(&jane), &json!([{"action": "D", "oid": oid}]))
        .await;
    assert_eq!(del[0]["action"], "D");
    assert_eq!(del[0]["oid"], oid.as_str());
    assert_eq!(del[0]["checkedtstamp"], made["tstamp"]);

    assert_eq!(
        status(&app, &format!("/props/{oid}"), Some(&jane)).await,
        404
    );
    assert_eq!(
        status(&app, &format!("/list/{oid}"), Some(&jane)).await,
        404
    );
    assert_eq!(
        status(
            &app,
            &format!("/props/1/world/{JANE}/trash-me"),
            Some(&jane)
        )
        .await,
        404
    );
    assert_eq!(
        names(&ok_json(&app, &format!("/list/{home}"), Some(&jane)).await),
        Vec::<String>::new()
    );
    let h = ok_json(&app, &format!("/history/{oid}"), Some(&jane)).await;
    let actions: Vec<&str> = arr(&h)
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["C", "D"]);
    assert_eq!(h[0]["tstampend"], h[1]["tstamp"]);
    assert_eq!(h[1]["tstampend"], "7fffffffffffffff");

    // A deleted object cannot be updated or deleted again.
    for body in [
        json!([{"action": "U", "oid": oid, "description": "x"}]),
        json!([{"action": "D", "oid": oid}]),
    ] {
        let before = app.fingerprint();
        let (s, b) = status_json(app.write(Some(&jane), &body).await).await;
        assert!(s == 404 || s == 409, "{s} {b}");
        assert_eq!(before, app.fingerprint());
    }
    // Names are unique among live children only: the name is free again.
    let again = mkdir(&app, &jane, &home, "trash-me", None).await;
    assert_ne!(again["oid"], made["oid"]);
}

#[tokio::test]
async fn purging_a_whole_object_empties_its_history_and_frees_its_name() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let made = mkdir(&app, &jane, &home, "gone", None).await;
    let oid = oid_of(&made);
    app.write_ok(
        Some(&jane),
        &json!([{"action": "U", "oid": oid, "description": "v2"}]),
    )
    .await;
    let events_before = app.event_count();
    let out = app
        .write_ok(Some(&jane), &json!([{"action": "P", "oid": oid}]))
        .await;
    assert_eq!(out[0]["action"], "P");
    assert_eq!(out[0]["oid"], oid.as_str());
    assert_eq!(
        app.event_count(),
        events_before - 2,
        "both versions are gone"
    );
    for path in [
        format!("/history/{oid}"),
        format!("/props/{oid}"),
        format!("/list/{oid}"),
    ] {
        assert_eq!(status(&app, &path, Some(&jane)).await, 404, "{path}");
    }
    assert_eq!(
        names(&ok_json(&app, &format!("/list/{home}"), Some(&jane)).await),
        Vec::<String>::new()
    );
    let again = mkdir(&app, &jane, &home, "gone", None).await;
    assert_ne!(again["oid"], made["oid"]);
    // A deleted object can be purged too.
    app.write_ok(
        Some(&jane),
        &json!([{"action": "D", "oid": oid_of(&again)}]),
    )
    .await;
    app.write_ok(
        Some(&jane),
        &json!([{"action": "P", "oid": oid_of(&again)}]),
    )
    .await;
    assert_eq!(
        status(&app, &format!("/history/{}", oid_of(&again)), Some(&jane)).await,
        404
    );
}

#[tokio::test]
async fn purging_one_version_by_purgetstamp_removes_exactly_that_version() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let v1 = mkdir(&app, &jane, &home, "versions", None).await;
    let oid = oid_of(&v1);
    let v2 = app
        .write_one(
            Some(&jane),
            json!({"action": "U", "oid": oid, "description": "v2"}),
        )
        .await;
    let v3 = app
        .write_one(
            Some(&jane),
            json!({"action": "U", "oid": oid, "description": "v3"}),
        )
        .await;
    let events_before = app.event_count();
    app.write_ok(
        Some(&jane),
        &json!([{"action": "P", "oid": oid, "purgetstamp": v2["tstamp"]}]),
    )
    .await;
    assert_eq!(app.event_count(), events_before - 1);
    let h = ok_json(&app, &format!("/history/{oid}"), Some(&jane)).await;
    let stamps: Vec<&Value> = arr(&h).iter().map(|e| &e["tstamp"]).collect();
    assert_eq!(stamps, [&v1["tstamp"], &v3["tstamp"]]);
    assert_eq!(
        h[0]["tstampend"], v3["tstamp"],
        "v1 now ends where v3 begins"
    );
    let p = ok_json(&app, &format!("/props/{oid}"), Some(&jane)).await;
    assert_eq!(p["tstamp"], v3["tstamp"]);
    assert_eq!(p["description"], "v3");
    // A version that does not exist.
    let before = app.fingerprint();
    let (s, b) = status_json(
        app.write(
            Some(&jane),
            &json!([{"action": "P", "oid": oid, "purgetstamp": v2["tstamp"]}]),
        )
        .await,
    )
    .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(before, app.fingerprint());
}

#[tokio::test]
async fn purging_a_folder_with_children_is_409() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let parent = oid_of(&mkdir(&app, &jane, &home, "parent", None).await);
    let child = oid_of(&mkdir(&app, &jane, &parent, "child", None).await);
    let before = app.fingerprint();
    let (s, b) = status_json(
        app.write(Some(&jane), &json!([{"action": "P", "oid": parent}]))
            .await,
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_error_shape(&b, 409, Some(0));
    assert_eq!(before, app.fingerprint());
    // Child first, then the folder: fine, in one transaction.
    app.write_ok(
        Some(&jane),
        &json!([{"action": "P", "oid": child}, {"action": "P", "oid": parent}]),
    )
    .await;
    assert_eq!(
        status(&app, &format!("/history/{parent}"), Some(&jane)).await,
        404
    );
}

#[tokio::test]
async fn purge_needs_the_p_letter() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");
    let janes = mkdir(&app, &root, "1", "janes", Some(owner_full_ro_all(JANE))).await;
    let oid = oid_of(&janes);
    let v2 = app
        .write_one(
            Some(&jane),
            json!({"action": "U", "oid": oid, "description": "v2"}),
        )
        .await;
    for body in [
        json!([{"action": "P", "oid": oid}]),
        json!([{"action": "P", "oid": oid, "purgetstamp": janes["tstamp"]}]),
    ] {
        let before = app.fingerprint();
        let (s, b) = status_json(app.write(Some(&bob), &body).await).await;
        assert_eq!(s, 403, "bob has R X only: {b}");
        assert_error_shape(&b, 403, Some(0));
        assert_eq!(before, app.fingerprint());
    }
    assert_eq!(
        arr(&ok_json(&app, &format!("/history/{oid}"), Some(&bob)).await).len(),
        2
    );
    app.write_ok(
        Some(&jane),
        &json!([{"action": "P", "oid": oid, "tstamp": v2["tstamp"]}]),
    )
    .await;
    assert_eq!(
        status(&app, &format!("/history/{oid}"), Some(&bob)).await,
        404
    );
}

// ---------------------------------------------------------------------------------------
// Moves and upserts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_move_changes_the_fulldir_of_the_moved_folder_and_of_its_descendants() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let ns = app.namespace_oid().await;
    let top = format!("/{ROOT_OID}/{ns}/{home}/");
    let a = oid_of(&mkdir(&app, &jane, &home, "a", None).await);
    let b = oid_of(&mkdir(&app, &jane, &home, "b", None).await);
    let c = oid_of(&mkdir(&app, &jane, &a, "c", None).await);
    let d = oid_of(&mkdir(&app, &jane, &c, "d", None).await);
    let fulldir = |o: String| {
        let app = &app;
        let jane = jane.clone();
        async move { ok_json(app, &format!("/props/{o}"), Some(&jane)).await["fulldir"].clone() }
    };
    assert_eq!(fulldir(d.clone()).await, format!("{top}{a}/{c}/"));

    let out = app
        .write_ok(
            Some(&jane),
            &json!([{"action": "U", "oid": a, "parentoid": b}]),
        )
        .await;
    assert_eq!(out[0]["parentoid"], b.as_str());
    assert_eq!(out[0]["fulldir"], format!("{top}{b}/"));
    assert_eq!(fulldir(a.clone()).await, format!("{top}{b}/"));
    assert_eq!(fulldir(c.clone()).await, format!("{top}{b}/{a}/"));
    assert_eq!(fulldir(d.clone()).await, format!("{top}{b}/{a}/{c}/"));
    let p = ok_json(&app, &format!("/props/1/world/{JANE}/b/a/c/d"), Some(&jane)).await;
    assert_eq!(p["oid"], d.as_str());
    assert_eq!(
        status(&app, &format!("/props/1/world/{JANE}/a/c/d"), Some(&jane)).await,
        404
    );
    assert_eq!(
        names(&ok_json(&app, &format!("/list/{home}"), Some(&jane)).await),
        ["b"]
    );
    assert_eq!(
        names(&ok_json(&app, &format!("/list/{b}"), Some(&jane)).await),
        ["a"]
    );
    // Listings show the descendants' new fulldir too.
    let l = ok_json(&app, &format!("/list/{a}"), Some(&jane)).await;
    assert_eq!(l[0]["fulldir"], format!("{top}{b}/{a}/"));

    // A move by path parentoid, back up to the home folder.
    app.write_ok(
        Some(&jane),
        &json!([{"action": "U", "oid": c, "parentoid": format!("1/world/{JANE}")}]),
    )
    .await;
    assert_eq!(fulldir(c.clone()).await, top);
    assert_eq!(fulldir(d.clone()).await, format!("{top}{c}/"));
    assert_eq!(
        fulldir(a.clone()).await,
        format!("{top}{b}/"),
        "a itself did not move"
    );
}

#[tokio::test]
async fn a_move_needs_c_on_the_new_parent() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let bob = app.token_for("bob");
    let bob_home = oid_of(&home_of(&app, &bob, BOB).await);
    let a = oid_of(&mkdir(&app, &jane, &home, "a", None).await);
    let before = app.fingerprint();
    let (s, b) = status_json(
        app.write(
            Some(&jane),
            &json!([{"action": "U", "oid": a, "parentoid": bob_home}]),
        )
        .await,
    )
    .await;
    assert!(s == 403 || s == 404, "{s} {b}");
    assert_eq!(before, app.fingerprint());
}

async fn home_of(app: &TestApp, token: &str, email: &str) -> Value {
    home(app, token, email).await
}

#[tokio::test]
async fn an_upsert_by_name_updates_the_existing_object_instead_of_creating_another() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let v1 = app
        .write_one(
            Some(&jane),
            json!({"action": "U", "parentoid": home, "name": "docs", "description": "v1"}),
        )
        .await;
    assert_eq!(v1["action"], "C", "an upsert of a new name creates");
    let v2 = app
        .write_one(
            Some(&jane),
            json!({"action": "U", "parentoid": home, "name": "docs", "description": "v2",
                     "security": {"label": "SECRET", "foreground": "#fff", "background": "#f00"}}),
        )
        .await;
    assert_eq!(v2["action"], "U");
    assert_eq!(v2["oid"], v1["oid"]);
    assert_eq!(v2["checkedtstamp"], v1["tstamp"]);
    assert_eq!(v2["description"], "v2");
    // By path parentoid as well.
    let v3 = app
        .write_one(
            Some(&jane),
            json!({"action": "U", "parentoid": format!("1/world/{JANE}"), "name": "docs",
                     "description": "v3"}),
        )
        .await;
    assert_eq!(v3["oid"], v1["oid"]);
    assert_eq!(
        v3["security"]["label"], "SECRET",
        "fields not sent are kept"
    );
    let l = ok_json(&app, &format!("/list/{home}"), Some(&jane)).await;
    assert_eq!(names(&l), ["docs"], "one object, not three");
    let h = ok_json(&app, &format!("/history/{}", oid_of(&v1)), Some(&jane)).await;
    let actions: Vec<&str> = arr(&h)
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["C", "U", "U"]);
    let p = ok_json(&app, &format!("/props/1/world/{JANE}/docs"), Some(&jane)).await;
    assert_eq!(p["description"], "v3");
}

#[tokio::test]
async fn a_rename_by_update_moves_the_path_and_keeps_the_oid() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let made = mkdir(&app, &jane, &home, "before", None).await;
    let out = app
        .write_ok(
            Some(&jane),
            &json!([{"action": "U", "oid": oid_of(&made), "name": "after"}]),
        )
        .await;
    assert_eq!(out[0]["oid"], made["oid"]);
    assert_eq!(
        status(&app, &format!("/props/1/world/{JANE}/before"), Some(&jane)).await,
        404
    );
    let p = ok_json(&app, &format!("/props/1/world/{JANE}/after"), Some(&jane)).await;
    assert_eq!(p["oid"], made["oid"]);
    // The old name is free.
    mkdir(&app, &jane, &home, "before", None).await;
    assert_eq!(
        name_set(&ok_json(&app, &format!("/list/{home}"), Some(&jane)).await),
        set(&["before", "after"])
    );
}

// ---------------------------------------------------------------------------------------
// Policy text forms, as a client sees them
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn original_policy_text_is_compiled_and_both_forms_are_returned() {
    let app = spawn_app().await;
    let (jane, home) = jane_home(&app).await;
    let bob = app.token_for("bob");
    let root = app.token_for("root");
    // SPEC §4's compact Lisp form, and the seed's Rego v0 form.
    let lisp = format!("(if (contains email \"{JANE}\")(yield-all)(yield R X))");
    let rego = format!(
        "package policy inOrg{{input.claims.values.email[_]==\"{JANE}\"}}C{{inOrg}}R{{inOrg}}U{{inOrg}}D{{inOrg}}X{{inOrg}}P{{inOrg}}"
    );
    let out = app
        .write_ok(
            Some(&root),
            &json!([
                {"action": "C", "parentoid": "1", "name": "lisp-text", "originalobjectpolicy": lisp},
                {"action": "C", "parentoid": "1", "name": "rego-text", "originalobjectpolicy": rego}
            ]),
        )
        .await;
    for (e, text) in out.iter().zip([&lisp, &rego]) {
        assert_eq!(e["originalobjectpolicy"], text.as_str(), "{e}");
        assert!(
            e["objectpolicy"].is_object(),
            "compiled into objectpolicy: {e}"
        );
        let p = ok_json(&app, &format!("/props/{}", oid_of(e)), Some(&jane)).await;
        assert_eq!(
            p["originalobjectpolicy"],
            text.as_str(),
            "stored and returned"
        );
        assert_eq!(p["objectpolicy"], e["objectpolicy"]);
        assert_eq!(letters(&p), ALL_LETTERS);
    }
    let p = ok_json(&app, &format!("/props/{}", oid_of(&out[0])), Some(&bob)).await;
    assert_eq!(letters(&p), ["R", "X"], "the Lisp else-branch");
    assert_eq!(
        status(&app, &format!("/props/{}", oid_of(&out[1])), Some(&bob)).await,
        404
    );
    // The seed's Rego in objectpolicy.rego, on a folder in jane's home.
    let out = app
        .write_ok(
            Some(&jane),
            &json!([{"action": "C", "parentoid": home, "name": "rego-json",
                     "objectpolicy": {"rego": rego}}]),
        )
        .await;
    assert_eq!(letters(&out[0]), ALL_LETTERS);
}

#[tokio::test]
async fn purging_a_version_leaves_the_object_where_a_later_move_of_its_folder_put_it() {
    let app = spawn_app().await;
    let root = app.token_for("root");
    let a = oid_of(&mkdir(&app, &root, "1", "a", None).await);
    let b = oid_of(&mkdir(&app, &root, "1", "b", None).await);
    let f = oid_of(&mkdir(&app, &root, &a, "f", None).await);
    let x = oid_of(&mkdir(&app, &root, &f, "x", None).await);
    let v2 = app
        .write_ok(
            Some(&root),
            &json!([{"action": "U", "oid": x, "description": "second version"}]),
        )
        .await;
    // `a` moves into `b`: x's stored versions keep the old path; the index moves it.
    app.write_ok(
        Some(&root),
        &json!([{"action": "U", "oid": a, "parentoid": b}]),
    )
    .await;
    let moved = format!("/{ROOT_OID}/{b}/{a}/{f}/");
    let props = ok_json(&app, &format!("/props/{x}"), Some(&root)).await;
    assert_eq!(props["fulldir"], moved);
    // Purging x's newest version makes the first one current again, still where it is.
    app.write_ok(
        Some(&root),
        &json!([{"action": "P", "oid": x, "purgetstamp": v2[0]["tstamp"]}]),
    )
    .await;
    let props = ok_json(&app, &format!("/props/{x}"), Some(&root)).await;
    assert_eq!(props["description"], json!(null), "{props}");
    assert_eq!(props["fulldir"], moved, "{props}");
    let path = "/props/1/b/a/f/x";
    assert_eq!(ok_json(&app, path, Some(&root)).await["oid"], json!(x));
}
