//! The person's and the operator's views (issue 4): GET /show, GET /notifications (SSE)
//! and GET /metrics, against the real server over HTTP.

use crate::common;
use crate::common::extra;

use std::time::Duration;

use common::spawn_app;
use extra::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

const JANE: &str = "jane.doe@deciphernow.com";

/// Reads SSE messages from a response until `n` events arrived (or 10 s passed).
pub(crate) async fn sse_events(resp: reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events arrive within 10 s")
            .expect("the feed stays open")
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let msg: String = buf.drain(..end + 2).collect();
            let (mut id, mut ev, mut data) = (String::new(), String::new(), None);
            for line in msg.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.into();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    ev = v.into();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap());
                }
            }
            if let Some(d) = data {
                out.push((id, ev, d));
            }
        }
    }
    out
}

pub(crate) async fn feed(
    app: &common::TestApp,
    token: &str,
    extra: &[(&str, &str)],
    query: &str,
) -> reqwest::Response {
    let mut req = app
        .client
        .get(format!("{}/notifications{query}", app.base))
        .header("userpolicy", token);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    resp
}

#[tokio::test]
async fn notifications_deliver_new_readable_events_in_order_and_resume_after_a_reconnect() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");
    let home = oid_of(&extra::home(&app, &jane, JANE).await);
    let live = feed(&app, &jane, &[], "").await;
    let bob_live = feed(&app, &bob, &[], "").await;

    let mut made = Vec::new();
    for i in 0..5 {
        made.push(oid_of(
            &mkdir(&app, &jane, &home, &format!("d{i}"), None).await,
        ));
    }
    // bob's own writes in his home are not jane's to see.
    let bob_home = oid_of(&extra::home(&app, &bob, "bob.smith@deciphernow.com").await);
    mkdir(&app, &bob, &bob_home, "secret", None).await;
    mkdir(&app, &jane, &home, "d5", None).await;

    let got = sse_events(live, 6).await;
    let names: Vec<&str> = got
        .iter()
        .map(|(_, _, e)| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["d0", "d1", "d2", "d3", "d4", "d5"],
        "in order, bob's hidden"
    );
    let ids: Vec<&String> = got.iter().map(|(id, _, _)| id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids (tstamps) increase");
    for (id, ev, e) in &got {
        assert_eq!(ev, "C");
        assert_eq!(&e["tstamp"], &json!(id));
        assert!(letters(e).contains(&"R".to_string()));
    }
    // bob's feed shows his own events, none of jane's (her home is owner-only).
    let bob_got = sse_events(bob_live, 2).await;
    let bob_names: Vec<&str> = bob_got
        .iter()
        .map(|(_, _, e)| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(bob_names, ["bob.smith@deciphernow.com", "secret"]);

    // Reconnect after the third event: exactly the rest, by header and by query.
    let third = got[2].0.clone();
    let resumed = sse_events(feed(&app, &jane, &[("last-event-id", &third)], "").await, 3).await;
    let names: Vec<&str> = resumed
        .iter()
        .map(|(_, _, e)| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d3", "d4", "d5"]);
    let resumed = sse_events(feed(&app, &jane, &[], &format!("?since={third}")).await, 3).await;
    assert_eq!(resumed[0].2["name"], "d3");
    // A bad Last-Event-ID is a 400.
    let resp = app
        .client
        .get(format!("{}/notifications", app.base))
        .header("userpolicy", &jane)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn a_feed_ends_when_its_token_stops_being_accepted() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let home = oid_of(&extra::home(&app, &jane, JANE).await);
    // exp is 0 to 1 s away (whole seconds); the server accepts a token 5 s past its exp
    // (clock-skew leeway), so the feed must end 4 to 6 s from now.
    let short = app
        .signer
        .sign(&common::claims("jane"), Duration::from_secs(1))
        .unwrap();
    let started = tokio::time::Instant::now();
    let resp = feed(&app, &short, &[], "").await;
    mkdir(&app, &jane, &home, "before", None).await;
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(15), body.next())
        .await
        .expect("the feed ends once its token has expired")
    {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_millis(3900),
        "ended before the token stopped being accepted: {lasted:?}"
    );
    assert!(text.contains("\"before\""), "{text}");
    assert!(text.contains(": token expired"), "{text}");
    // The expired token is refused now; a fresh one resumes where the feed stopped.
    let resp = app
        .client
        .get(format!("{}/notifications", app.base))
        .header("userpolicy", &short)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    mkdir(&app, &jane, &home, "after", None).await;
    let got = sse_events(feed(&app, &jane, &[], "?since=0000000000000001").await, 5).await;
    let names: Vec<&str> = got
        .iter()
        .map(|(_, _, e)| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1", "world", JANE, "before", "after"]);
}

#[tokio::test]
async fn metrics_count_requests_transactions_bytes_and_policy_work() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let home = oid_of(&extra::home(&app, &jane, JANE).await);
    let meta = json!([{"action": "C", "parentoid": home, "name": "f.bin", "isfile": true}]);
    let out = write_parts(&app, Some(&jane), &meta, &[("f.bin", &[9u8; 1000])]).await;
    assert_eq!(out.status(), 200);
    let f: Vec<Value> = out.json().await.unwrap();
    let s = app
        .get(&format!("/stream/{}", oid_of(&f[0])), Some(&jane))
        .await;
    assert_eq!(s.bytes().await.unwrap().len(), 1000);
    assert_eq!(
        app.get("/props/0123456789abcdef", Some(&jane))
            .await
            .status(),
        404
    );

    let resp = app.get("/metrics", None).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("vellum_http_requests_total{route=\"write\",status=\"200\"}"),
        2.0
    );
    assert_eq!(
        value("vellum_http_requests_total{route=\"props\",status=\"404\"}"),
        1.0
    );
    assert_eq!(
        value("vellum_http_requests_total{route=\"stream\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        value("vellum_http_request_duration_seconds_count{route=\"write\"}"),
        2.0
    );
    assert_eq!(
        value("vellum_http_request_duration_seconds_bucket{route=\"write\",le=\"+Inf\"}"),
        2.0
    );
    assert_eq!(value("vellum_transactions_committed_total"), 2.0);
    assert_eq!(value("vellum_events_committed_total"), 2.0);
    assert_eq!(value("vellum_bytes_in_total"), 1000.0);
    assert_eq!(value("vellum_bytes_out_total"), 1000.0);
    assert_eq!(value("vellum_blob_store_errors_total"), 0.0);
    assert!(value("vellum_policy_evaluations_total") > 0.0);
    assert!(text.contains("# TYPE vellum_policy_cache_hits_total counter"));
    // What the server holds: the scrape's own connection, no feed, caches that were used.
    assert!(text.contains("# TYPE vellum_http_connections_open gauge"));
    assert!(value("vellum_http_connections_open") >= 1.0);
    assert_eq!(value("vellum_feeds_open"), 0.0);
    assert!(value("vellum_token_cache_entries") >= 1.0);
    assert!(value("vellum_policy_compiled_cache_entries") >= 1.0);
    assert!(value("vellum_policy_compiled_cache_bytes") >= 8192.0);
    assert!(value("vellum_policy_result_cache_entries") >= 1.0);
    assert_eq!(value("vellum_policy_gate_waiting"), 0.0);
}

#[tokio::test]
async fn show_renders_banner_breadcrumbs_listing_and_preview_and_hides_what_cannot_be_read() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");
    let home = oid_of(&extra::home(&app, &jane, JANE).await);
    let security = json!({"label": "SECRET <b>&co</b>", "foreground": "#FFFFFF",
                          "background": "#8B0000"});
    let pics = app
        .write_ok(
            Some(&jane),
            &json!([{"action": "C", "parentoid": home, "name": "pics", "security": security,
                     "objectpolicy": owner_full_ro_all(JANE)}]),
        )
        .await;
    let pics = oid_of(&pics[0]);
    let meta = json!([
        {"action": "C", "parentoid": pics, "name": "notes <1>.txt", "isfile": true,
         "objectpolicy": owner_full_ro_all(JANE)},
        {"action": "C", "parentoid": pics, "name": "private.txt", "isfile": true,
         "objectpolicy": owner_only(JANE)},
        {"action": "C", "parentoid": pics, "name": "evil", "isfile": true,
         "objectpolicy": owner_full_ro_all(JANE),
         "security": {"label": "x", "foreground": "red;background:url(x)", "background": "\"><script>"}}
    ]);
    let out = write_parts(
        &app,
        Some(&jane),
        &meta,
        &[
            ("a", b"hello <script>alert(1)</script>"),
            ("b", b"jane only"),
            ("c", b"c"),
        ],
    )
    .await;
    assert_eq!(out.status(), 200);
    let files: Vec<Value> = out.json().await.unwrap();

    let page = |token: String, path: String| {
        let app = &app;
        async move {
            let resp = app.get(&format!("/show/{path}"), Some(&token)).await;
            let status = resp.status().as_u16();
            let csp = resp
                .headers()
                .get("content-security-policy")
                .map(|v| v.to_str().unwrap().to_string());
            (status, csp, resp.text().await.unwrap())
        }
    };
    // The folder, as bob: banner in its colours at top and bottom, escaped label, the
    // readable children linked, the private one absent.
    let (status, csp, html) = page(bob.clone(), pics.clone()).await;
    assert_eq!(status, 200, "{html}");
    assert!(csp.unwrap().contains("default-src 'none'"));
    let banner = "<div class=\"banner\" style=\"color:#FFFFFF;background-color:#8B0000\">SECRET &lt;b&gt;&amp;co&lt;/b&gt;</div>";
    assert_eq!(html.matches(banner).count(), 2, "{html}");
    assert!(html.contains(&format!(
        "href=\"/show/{}\">notes &lt;1&gt;.txt</a>",
        oid_of(&files[0])
    )));
    assert!(!html.contains("private.txt"), "bob cannot read private.txt");
    assert!(html.contains("<span class=\"perm\" id=\"perms\">RX</span>"));
    assert!(!html.contains("<script>"));
    // Breadcrumbs: bob cannot read jane's home, so it shows as an oid link.
    assert!(html.contains(&format!("<a href=\"/show/{home}\">{home}</a>")));
    // The text file: a download link and an escaped preview.
    let (status, _, html) = page(bob.clone(), format!("{pics}/notes%20%3C1%3E.txt")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("href=\"/stream/{}\"", oid_of(&files[0]))));
    assert!(
        html.contains("<pre class=\"preview\">hello &lt;script&gt;alert(1)&lt;/script&gt;</pre>")
    );
    // Colours that are not colours fall back to the defaults.
    let (_, _, html) = page(bob.clone(), oid_of(&files[2])).await;
    assert!(
        html.contains("style=\"color:#000000;background-color:#dddddd\""),
        "{html}"
    );
    assert!(!html.contains("url(x)") && !html.contains("\"><script>"));
    // What bob may not read is a 404, like /props.
    let (status, _, _) = page(bob.clone(), oid_of(&files[1])).await;
    assert_eq!(status, 404);
    // jane sees private.txt and all letters.
    let (_, _, html) = page(jane.clone(), pics.clone()).await;
    assert!(html.contains("private.txt") && html.contains("id=\"perms\">CRUDXP<"));
}

#[tokio::test]
async fn markup_in_names_and_fields_is_escaped_wherever_show_prints_it() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let home = oid_of(&extra::home(&app, &jane, JANE).await);
    // Names may hold anything but '/' and NUL.
    let evil = "<script src=\"x\"> & 'co'";
    let shown = "&lt;script src=&quot;x&quot;&gt; &amp; 'co'";
    let folder = app
        .write_ok(
            Some(&jane),
            &json!([{"action": "C", "parentoid": home, "name": evil,
                     "objectpolicy": owner_full_ro_all(JANE),
                     "<b id=\"k\">key</b>": "<i>\"value\" & more</i>"}]),
        )
        .await;
    let folder = oid_of(&folder[0]);
    let meta = json!([{"action": "C", "parentoid": folder, "name": evil, "isfile": true,
                       "mimetype": "image/png", "objectpolicy": owner_full_ro_all(JANE)}]);
    let out = write_parts(&app, Some(&jane), &meta, &[("a", b"not really a png")]).await;
    assert_eq!(out.status(), 200);
    let files: Vec<Value> = out.json().await.unwrap();
    let file = oid_of(&files[0]);

    let page = |path: String| {
        let app = &app;
        let jane = &jane;
        async move {
            let resp = app
                .client
                .get(format!("{}{path}", app.base))
                .header("userpolicy", jane)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let html = resp.text().await.unwrap();
            // Nothing of the names or the field became markup.
            for raw in ["<script", "<b ", "<i>", "\"x\""] {
                assert!(!html.contains(raw), "{path}: {raw} unescaped: {html}");
            }
            (status, html)
        }
    };
    // The listing of the home folder.
    let (status, html) = page(format!("/show/{home}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&format!("<a href=\"/show/{folder}\">{shown}/</a>")),
        "listing: {html}"
    );
    // The folder's own page: title, breadcrumb end, heading, and the client's field (its name
    // and its value).
    let (status, html) = page(format!("/show/{folder}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&format!("<title>{shown} · Vellum</title>")),
        "{html}"
    );
    assert!(
        html.contains(&format!("<strong>{shown}</strong>")),
        "{html}"
    );
    assert!(html.contains(&format!("<h1>{shown}</h1>")), "{html}");
    assert!(
        html.contains(
            "<th>&lt;b id=&quot;k&quot;&gt;key&lt;/b&gt;</th>\
             <td>&lt;i&gt;&quot;value&quot; &amp; more&lt;/i&gt;</td>"
        ),
        "field: {html}"
    );
    // The file's page: the folder as a breadcrumb, the download name, the image's alt text.
    let (status, html) = page(format!("/show/{file}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&format!("<a href=\"/show/{folder}\">{shown}</a> / ")),
        "breadcrumb: {html}"
    );
    assert!(html.contains(&format!("download=\"{shown}\"")), "{html}");
    assert!(html.contains(&format!("alt=\"{shown}\"")), "{html}");
    // The error page names the missing name, escaped, in its message.
    let missing = percent_encoding::utf8_percent_encode(
        &format!("{evil}2"),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let (status, html) = page(format!("/show/{folder}/{missing}")).await;
    assert_eq!(status, 404, "{html}");
    assert!(html.contains(&format!("{shown}2 not found")), "{html}");
}

#[tokio::test]
async fn shutdown_lets_an_upload_in_flight_finish_and_then_refuses_connections() {
    let mut app = spawn_app().await;
    let jane = app.token_for("jane");
    let home = oid_of(&extra::home(&app, &jane, JANE).await);
    // An upload whose body trickles in over ~1.5 s.
    let meta = json!([{"action": "C", "parentoid": home, "name": "slow.bin", "isfile": true}]);
    let chunks = futures_util::stream::iter(0..15).then(|_| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::io::Error>(vec![7u8; 100_000])
    });
    let form = reqwest::multipart::Form::new()
        .part("metadata", reqwest::multipart::Part::text(meta.to_string()))
        .part(
            "data",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks))
                .file_name("slow.bin"),
        );
    let req = app
        .client
        .post(format!("{}/write", app.base))
        .header("userpolicy", &jane)
        .multipart(form)
        .send();
    let upload = tokio::spawn(req);
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.stop();
    let resp = upload
        .await
        .unwrap()
        .expect("the upload in flight is answered");
    assert_eq!(resp.status(), 200);
    let ev: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(ev[0]["size"], 1_500_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = reqwest::Client::new()
        .get(format!("{}/healthz", app.base))
        .send()
        .await;
    assert!(after.is_err(), "a stopped server accepts no new connection");
}

#[tokio::test]
async fn bad_show_and_notification_requests_get_their_error_and_change_nothing() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let home = oid_of(&extra::home(&app, &jane, JANE).await);
    let cases: [(&str, u16, &str, &str); 8] = [
        ("/show/xyz", 400, "bad_path", "xyz"),
        ("/show/1?after=xyz", 400, "bad_query", "after"),
        ("/show/1?limit=many", 400, "bad_query", "limit"),
        (
            "/show/0123456789abcdef",
            404,
            "not_found",
            "0123456789abcdef",
        ),
        ("/show/1/world/nobody", 404, "not_found", "nobody"),
        ("/notifications?since=xyz", 400, "bad_query", "since"),
        (
            "/notifications?since=12345678901234567",
            400,
            "bad_query",
            "tstamp",
        ),
        ("/show/1/world/%FF", 400, "bad_path", ""),
    ];
    for (path, status, code, mentions) in cases {
        let before = app.fingerprint();
        let (s, body) = status_json(app.get(path, Some(&jane)).await).await;
        assert_eq!(s, status, "{path}: {body}");
        let err = assert_error_shape(&body, status, None);
        assert_eq!(err["code"], code, "{path}: {body}");
        assert!(
            err["message"].as_str().unwrap().contains(mentions),
            "{path}: the message names what is wrong: {body}"
        );
        assert_eq!(before, app.fingerprint(), "{path} changed the store");
    }
    // Another user's home is not shown, and looks exactly like a missing object.
    let bob = app.token_for("bob");
    let (s, body) = status_json(app.get(&format!("/show/{home}"), Some(&bob)).await).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(
        body["error"]["message"],
        format!("{home} not found"),
        "nothing about why"
    );
}

#[tokio::test]
async fn a_browser_gets_show_errors_as_a_page_with_the_message_escaped() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let page = |path: &'static str, token: Option<String>| {
        let mut req = app
            .client
            .get(format!("{}{path}", app.base))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        if let Some(t) = token {
            req = req.header("userpolicy", t);
        }
        req.send()
    };
    for (path, token, status, title) in [
        (
            "/show/1/%3Cscript%3Ealert(1)",
            Some(jane.clone()),
            404,
            "404 Not Found",
        ),
        ("/show/xyz", Some(jane.clone()), 400, "400 Bad Request"),
        (
            "/show/1",
            Some("not.a.jwt".to_string()),
            401,
            "401 Unauthorized",
        ),
    ] {
        let resp = page(path, token).await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let h = resp.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'none'"),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        if status == 401 {
            assert_eq!(h["www-authenticate"], "Bearer");
        }
        let body = resp.text().await.unwrap();
        assert!(
            body.contains(&format!("<h1>{title}</h1>")),
            "{path}: {body}"
        );
        assert!(
            body.contains("<a href=\"/show/0000000000000001\">"),
            "a way back: {body}"
        );
        assert!(!body.contains("<script"), "{path}: unescaped: {body}");
    }
    let body = page("/show/1/%3Cscript%3Ealert(1)", Some(jane))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("0000000000000001/&lt;script&gt;alert(1) not found"),
        "{body}"
    );
    // Without text/html in Accept, the API's JSON error as before.
    let (s, body) = status_json(app.get("/show/xyz", None).await).await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["code"], "bad_path");
}
