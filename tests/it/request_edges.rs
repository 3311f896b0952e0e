//! Credentials and response headers at the edges (issue 10, item 8): the Bearer scheme in
//! any case and spacing (a bad token is a 401 whatever the spelling), cookie-authenticated
//! writes only from the server's own origin, and `nosniff` on every JSON response.

use crate::common;
use crate::common::extra;

use common::{spawn_app, TestApp};
use extra::*;
use serde_json::{json, Value};

async fn self_as(app: &TestApp, headers: &[(&str, &str)]) -> (u16, Value) {
    status_json(get_with(&app.base, "/self", headers).await).await
}

// ---------------------------------------------------------------------------------------
// Bearer
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case_and_spacing_and_a_bad_token_is_401() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let ns = app.namespace_oid().await;
    for scheme in ["Bearer ", "BEARER ", "bearer  ", "bEaReR\t", "Bearer \t "] {
        let good = format!("{scheme}{jane}");
        let (s, me) = self_as(&app, &[("authorization", &good)]).await;
        assert_eq!(s, 200, "{scheme:?}: {me}");
        assert_eq!(
            me["label"], "asjane",
            "{scheme:?} must authenticate, not be anonymous"
        );

        let bad = format!("{scheme}not-a-token");
        let (s, body) = self_as(&app, &[("authorization", &bad)]).await;
        assert_eq!(s, 401, "{scheme:?} with a bad token: {body}");
        assert_error_shape(&body, 401, None);
        let err = refused(
            &app,
            401,
            None,
            write_with(
                &app,
                &[("authorization", &bad)],
                &json!([{"action": "C", "parentoid": ns, "name": JANE}]),
            ),
        )
        .await;
        assert_eq!(err["code"], "unauthorized", "{err}");
    }
    // A write under any spelling lands as jane.
    let resp = write_with(
        &app,
        &[("authorization", &format!("BEARER  {jane}"))],
        &json!([{"action": "C", "parentoid": ns, "name": JANE}]),
    )
    .await;
    let (s, out) = status_json(resp).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out[0]["userpolicy"]["label"], "asjane");
    // Another scheme is not ours: the caller is anonymous, not refused.
    let (s, me) = self_as(&app, &[("authorization", "Basic amFuZTpzZWNyZXQ=")]).await;
    assert_eq!((s, me["label"].clone()), (200, json!("anonymous")), "{me}");
}

// ---------------------------------------------------------------------------------------
// Cookie writes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn cookie_authenticated_writes_from_a_browser_need_the_servers_own_origin() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let cookie = format!("userpolicy={jane}");
    let home = oid_of(&home(&app, &jane, JANE).await);
    let create = |name: &str| json!([{"action": "C", "parentoid": home, "name": name}]);
    let port = app.addr.port();

    for (origin, fetch_site) in [
        (Some("http://evil.example".to_string()), None),
        (Some(format!("http://127.0.0.1:{}", port + 1)), None),
        (Some(format!("http://127.0.0.1:{port}.evil.example")), None),
        (Some("null".to_string()), None),
        // A browser that marks the request cross-site, whatever else it says.
        (None, Some("cross-site")),
        (Some(app.base.clone()), Some("cross-site")),
    ] {
        let mut headers = vec![("cookie", cookie.as_str())];
        if let Some(o) = &origin {
            headers.push(("origin", o.as_str()));
        }
        if let Some(f) = fetch_site {
            headers.push(("sec-fetch-site", f));
        }
        let err = refused(
            &app,
            403,
            None,
            write_with(&app, &headers, &create("forged")),
        )
        .await;
        assert_eq!(
            err["code"], "cross_origin_cookie_write",
            "{origin:?}: {err}"
        );
    }

    // No Origin at all is not a browser (curl, the gm-data clients, the tutorial's raw
    // requests): nothing another site could make it send.
    let (s, out) =
        status_json(write_with(&app, &[("cookie", &cookie)], &create("curl")).await).await;
    assert_eq!(s, 200, "{out}");

    // The server's own origin (as a browser on its pages sends it) may write.
    let own = app.base.clone();
    let resp = write_with(
        &app,
        &[("cookie", &cookie), ("origin", &own)],
        &create("same-origin"),
    )
    .await;
    let (s, out) = status_json(resp).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out[0]["userpolicy"]["label"], "asjane");
    // Host names compare without regard to case.
    let upper = own.replace("http://", "HTTP://");
    let (s, out) = status_json(
        write_with(
            &app,
            &[("cookie", &cookie), ("origin", &upper)],
            &create("upper"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{out}");

    // The header and Bearer need no Origin: no other site can make a browser send them.
    let (s, out) = status_json(
        write_with(
            &app,
            &[("userpolicy", &jane), ("cookie", &cookie)],
            &create("by-header"),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{out}");
    let bearer = format!("Bearer {jane}");
    let (s, out) =
        status_json(write_with(&app, &[("authorization", &bearer)], &create("by-bearer")).await)
            .await;
    assert_eq!(s, 200, "{out}");

    // Reads on the cookie are unaffected.
    let (s, me) = self_as(&app, &[("cookie", &cookie)]).await;
    assert_eq!((s, me["label"].clone()), (200, json!("asjane")));
    let (s, _) =
        status_json(get_with(&app.base, &format!("/props/{home}"), &[("cookie", &cookie)]).await)
            .await;
    assert_eq!(s, 200);
}

// ---------------------------------------------------------------------------------------
// nosniff
// ---------------------------------------------------------------------------------------

fn assert_nosniff(resp: &reqwest::Response, what: &str) {
    assert_eq!(
        resp.headers()
            .get("x-content-type-options")
            .map(|v| v.to_str().unwrap()),
        Some("nosniff"),
        "{what}: {}",
        resp.status()
    );
}

#[tokio::test]
async fn json_responses_and_errors_are_never_sniffed() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let home = oid_of(&home(&app, &jane, JANE).await);
    for (path, token, status) in [
        ("/config".to_string(), None, 200),
        ("/healthz".to_string(), None, 200),
        ("/self".to_string(), Some(jane.as_str()), 200),
        (format!("/props/{home}"), Some(&jane), 200),
        (format!("/list/{home}"), Some(&jane), 200),
        (format!("/history/{home}"), Some(&jane), 200),
        (format!("/props/{home}"), None, 404),
        ("/props/1/nothing-here".to_string(), None, 404),
        ("/self".to_string(), Some("garbage"), 401),
        ("/nowhere".to_string(), None, 404),
    ] {
        let resp = app.get(&path, token).await;
        assert_eq!(resp.status(), status, "{path}");
        assert_nosniff(&resp, &path);
    }
    let ok = app
        .write(
            Some(&jane),
            &json!([{"action": "C", "parentoid": home, "name": "n"}]),
        )
        .await;
    assert_eq!(ok.status(), 200);
    assert_nosniff(&ok, "a write");
    let bad = app.write_raw(Some(&jane), "not json".into()).await;
    assert_eq!(bad.status(), 400);
    assert_nosniff(&bad, "a refused write");
}

// ---------------------------------------------------------------------------------------
// The request head's size (MAX_HEADER_BYTES, 32 KiB)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_head_over_max_header_bytes_is_431_and_the_server_goes_on_serving() {
    let app = spawn_app().await;
    let token = app.token_for("jane");
    // 20 KiB of headers beside the token: served.
    let pad = "p".repeat(20 << 10);
    let (status, me) = self_as(&app, &[("userpolicy", &token), ("x-padding", &pad)]).await;
    assert_eq!(status, 200, "{me}");
    // 80 KiB: refused, and nothing else is read of it. (hyper checks the buffer between
    // reads of growing size, so a head of up to about twice the limit can pass.)
    let pad = "p".repeat(80 << 10);
    let resp = get_with(
        &app.base,
        "/self",
        &[("userpolicy", &token), ("x-padding", &pad)],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 431);
    let (status, _) = self_as(&app, &[("userpolicy", &token)]).await;
    assert_eq!(status, 200);
}
