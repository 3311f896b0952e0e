//! schema/openapi.json against the running server: every endpoint the router knows is
//! documented, every documented path is served, and each status and content type the
//! server answers with (successes and errors) is in the document for that path and method.

use crate::common;
use crate::common::extra;

use std::path::Path;

use common::{spawn_app_with, TestApp};
use extra::*;
use reqwest::Method;
use serde_json::{json, Value};

fn document() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The documented path template a concrete path falls under (`/props/1/a/b` → `/props/{ref}`,
/// `/shares/00ab/log` → `/shares/{id}/log`; literal segments win over placeholders).
fn template<'d>(doc: &'d Value, path: &str) -> &'d str {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let score = |k: &str| -> Option<usize> {
        let ks: Vec<&str> = k.trim_start_matches('/').split('/').collect();
        if ks.first() != segs.first() {
            return None;
        }
        if ks.last() == Some(&"{ref}") {
            return Some(0); // an oid and any names after it
        }
        if ks.len() != segs.len() {
            return None;
        }
        let mut literal = 0;
        for (k, s) in ks.iter().zip(&segs) {
            if k.starts_with('{') {
                continue;
            }
            if k != s {
                return None;
            }
            literal += 1;
        }
        Some(literal)
    };
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|k| score(k).map(|sc| (sc, k)))
        .max_by_key(|(sc, _)| *sc)
        .map(|(_, k)| k.as_str())
        .unwrap_or_else(|| panic!("{path} is not documented"))
}

struct Check<'a> {
    app: &'a TestApp,
    doc: Value,
    seen: Vec<(String, String, u16)>,
}

/// One request and the status it must be answered with.
struct Case {
    method: Method,
    path: String,
    token: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Option<reqwest::multipart::Form>,
    json: Option<String>,
    want: u16,
}

fn req(method: Method, path: impl Into<String>, token: Option<&str>, want: u16) -> Case {
    Case {
        method,
        path: path.into(),
        token: token.map(str::to_string),
        headers: Vec::new(),
        body: None,
        json: None,
        want,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// A JSON body (the share endpoints).
    fn json(mut self, body: impl Into<String>) -> Self {
        self.json = Some(body.into());
        self
    }

    /// A `/write` body: the metadata part, then one file part per content.
    fn form(mut self, meta: &Value, files: &[&[u8]]) -> Self {
        let mut f = reqwest::multipart::Form::new()
            .part("metadata", reqwest::multipart::Part::text(meta.to_string()));
        for b in files {
            f = f.part(
                "file",
                reqwest::multipart::Part::bytes(b.to_vec()).file_name("f"),
            );
        }
        self.body = Some(f);
        self
    }
}

impl Check<'_> {
    /// Sends `case`, asserts its status and that the document describes the answer.
    async fn send(&mut self, case: Case) {
        let Case {
            method,
            path,
            token,
            headers,
            body,
            json,
            want,
        } = case;
        let path = path.as_str();
        let mut req = self
            .app
            .client
            .request(method.clone(), format!("{}{path}", self.app.base));
        if let Some(t) = token {
            req = req.header("userpolicy", t);
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(f) = body {
            req = req.multipart(f);
        }
        if let Some(j) = json {
            req = req.header("content-type", "application/json").body(j);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, want, "{method} {path}");
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
        if status >= 400 && ctype.as_deref() == Some("application/json") {
            let body: Value = resp.json().await.unwrap();
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                documented_codes(&self.doc).contains(&code),
                "{method} {path} answered code {code:?}, which the document does not list"
            );
        }
        let t = template(&self.doc, path.split('?').next().unwrap()).to_string();
        let m = method.as_str().to_ascii_lowercase();
        let op = &self.doc["paths"][&t][&m];
        if !op.is_object() {
            // A method the document does not list for a documented path must be refused.
            assert_eq!(
                status, 405,
                "{method} {path}: undocumented method not refused"
            );
            return;
        }
        let documented = &op["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, which {t} does not document"
        );
        if let (Some(ct), Some(content)) = (ctype, documented["content"].as_object()) {
            if m != "head" && status != 304 {
                assert!(
                    content.contains_key(&ct) || content.contains_key("*/*"),
                    "{method} {path} {status} answered {ct}, documented {:?}",
                    content.keys().collect::<Vec<_>>()
                );
            }
        }
        self.seen.push((t, m, status));
    }
}

/// The error codes the document lists.
fn documented_codes(doc: &Value) -> Vec<String> {
    doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .expect("the document lists the error codes")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_document_lists_exactly_the_error_codes_the_server_has() {
    let server: Vec<String> = vellum::error::Code::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(documented_codes(&document()), server);
}

#[tokio::test]
async fn the_openapi_document_matches_what_the_server_answers() {
    // Webhook deliveries to a port nothing listens on fail at once, leaving a failed task
    // to retry.
    let app = spawn_app_with(&[
        "--max-file-bytes",
        "100000",
        "--share-webhook-url",
        "http://127.0.0.1:9/hook",
        "--share-webhook-secret",
        "s",
        "--task-max-attempts",
        "1",
    ])
    .await;
    let doc = document();
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");
    let home = oid_of(&home(&app, &jane, "jane.doe@deciphernow.com").await);
    let mut c = Check {
        app: &app,
        doc: doc.clone(),
        seen: Vec::new(),
    };
    let (get, post, head) = (Method::GET, Method::POST, Method::HEAD);
    let f = json!([{"action": "C", "parentoid": home, "name": "a.txt", "isfile": true}]);
    // Bob may read the root (everyone may) but not write there: 403. Into Jane's home, which
    // he may not read, the same write is a plain 404.
    let other = json!([{"action": "C", "parentoid": "1", "name": "b", "isfile": false}]);
    let missing = json!([{"action": "U", "oid": "0123456789abcdef", "name": "x"}]);
    let big = json!([{"action": "C", "parentoid": home, "name": "big", "isfile": true}]);
    let file = format!("{home}/a.txt");
    let stream = format!("/stream/{file}");
    let etag = format!("\"{}\"", sha256_hex("hello world"));
    let (jane, bob) = (Some(jane.as_str()), Some(bob.as_str()));

    // In order: the first write creates the file the reads use.
    let mut cases = vec![
        // Writes: 200, 400, 401, 403, 404, 409, 413, 405.
        req(post.clone(), "/write", jane, 200).form(&f, &[b"hello world"]),
        req(post.clone(), "/write", jane, 400).form(&json!("x"), &[]),
        req(post.clone(), "/write", Some("not.a.jwt"), 401).form(&f, &[]),
        req(post.clone(), "/write", bob, 403).form(&other, &[]),
        req(post.clone(), "/write", jane, 404).form(&missing, &[]),
        req(post.clone(), "/write", jane, 409).form(&f, &[b"again"]),
        req(post.clone(), "/write", jane, 413).form(&big, &[&[0u8; 100_001]]),
        req(get.clone(), "/write", jane, 405),
    ];
    // Reads.
    for (p, target) in [("props", &file), ("list", &home), ("history", &file)] {
        cases.extend([
            req(get.clone(), format!("/{p}/{target}"), jane, 200),
            req(get.clone(), format!("/{p}/{target}"), bob, 404),
            req(get.clone(), format!("/{p}/xyz"), jane, 400),
            req(get.clone(), format!("/{p}/{target}"), Some("bad"), 401),
        ]);
    }
    cases.extend([
        req(get.clone(), format!("/derived/{home}"), jane, 200),
        req(get.clone(), &stream, jane, 200),
        req(head, &stream, jane, 200),
        req(get.clone(), &stream, jane, 206).header("range", "bytes=0-3"),
        req(get.clone(), &stream, jane, 416).header("range", "bytes=99-"),
        req(get.clone(), &stream, jane, 304).header("if-none-match", &etag),
        req(get.clone(), &stream, bob, 404),
        req(get.clone(), format!("/show/{home}"), jane, 200),
        req(get.clone(), format!("/show/{file}"), jane, 200),
        req(get.clone(), format!("/show/{home}"), bob, 404),
        req(get.clone(), format!("/access/{file}"), jane, 200),
        req(get.clone(), format!("/access/{file}?claims=x"), jane, 400),
        req(get.clone(), format!("/access/{file}"), Some("bad"), 401),
        req(get.clone(), format!("/access/{file}"), bob, 404),
        req(get.clone(), "/self", jane, 200),
        req(get.clone(), "/self", Some("bad"), 401),
        req(get.clone(), "/config", None, 200),
        req(get.clone(), "/healthz", None, 200),
        req(get.clone(), "/metrics", None, 200),
        req(get.clone(), "/notifications", jane, 400).header("last-event-id", "x"),
        req(post, "/props/1", jane, 405),
    ]);
    for case in cases {
        c.send(case).await;
    }

    // Shares (SPEC §9.4), in order: offers, then their answers.
    let offer = |who: &str, oid: &str, extra: &str| {
        format!(
            r#"{{"oid": "{oid}", "audience": {{"claim": "email", "value": "{who}"}}, "role": "reader"{extra}}}"#
        )
    };
    let to_bob = offer("bob.smith@deciphernow.com", &home, r#", "terms": "t""#);
    let rob = app.token_for("rob");
    let rob = Some(rob.as_str());
    for case in [
        req(Method::POST, "/shares", bob, 403).json(offer(JANE, "1", "")),
        req(Method::POST, "/shares", bob, 404).json(to_bob.clone()),
        req(Method::POST, "/shares", jane, 400).json("{"),
        req(Method::POST, "/shares", None, 401).json(to_bob.clone()),
        req(Method::POST, "/shares", Some("bad"), 401).json(to_bob.clone()),
        req(Method::POST, "/shares", jane, 413).json(" ".repeat(70_000)),
        req(Method::POST, "/shares/redeem", bob, 404).json(r#"{"secret": "nope"}"#),
        req(Method::POST, "/shares/redeem", None, 401).json(r#"{"secret": "nope"}"#),
        req(Method::POST, "/shares/redeem", bob, 400).json("{}"),
        req(Method::GET, "/shares/redeem", bob, 405),
        req(Method::GET, "/shares", jane, 400),
        req(Method::GET, "/shares?oid=xyz", jane, 400),
        req(Method::GET, "/shares/incoming?state=lost", bob, 400),
        req(Method::GET, "/shares/incoming", None, 401),
        req(Method::GET, "/shares/outgoing", None, 401),
        req(Method::PUT, "/shares", jane, 405),
    ] {
        c.send(case).await;
    }
    let created = app
        .client
        .post(format!("{}/shares", app.base))
        .header("userpolicy", jane.unwrap())
        .header("content-type", "application/json")
        .body(to_bob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let declined_one = app
        .client
        .post(format!("{}/shares", app.base))
        .header("userpolicy", jane.unwrap())
        .header("content-type", "application/json")
        .body(to_bob.clone())
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let link = app
        .client
        .post(format!("{}/shares", app.base))
        .header("userpolicy", jane.unwrap())
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"oid": "{home}", "audience": {{"link": true}}, "role": "reader", "max_redemptions": 1}}"#
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let redeem = format!(r#"{{"secret": "{}"}}"#, link["secret"].as_str().unwrap());
    for case in [
        req(Method::POST, "/shares", jane, 201).json(to_bob.clone()),
        req(Method::GET, format!("/shares?oid={home}"), jane, 200),
        req(Method::GET, format!("/shares?oid={home}"), bob, 404),
        req(Method::GET, "/shares/incoming?state=pending", bob, 200),
        req(Method::GET, "/shares/outgoing", jane, 200),
        req(Method::GET, format!("/shares/{id}"), jane, 200),
        req(Method::GET, format!("/shares/{id}"), rob, 404),
        req(Method::GET, format!("/shares/{id}"), None, 401),
        req(Method::GET, format!("/shares/{id}/log"), bob, 200),
        req(Method::GET, format!("/shares/{id}/log"), rob, 404),
        req(Method::GET, format!("/shares/{id}/log"), None, 401),
        req(Method::POST, format!("/shares/{id}/accept"), jane, 403),
        req(Method::POST, format!("/shares/{id}/accept"), rob, 404),
        req(Method::POST, format!("/shares/{id}/accept"), None, 401),
        req(Method::POST, format!("/shares/{id}/accept"), bob, 200),
        req(Method::GET, format!("/shares?oid={home}"), bob, 403),
        req(Method::GET, format!("/shares?oid={home}"), None, 401),
        req(Method::POST, format!("/shares/{id}/decline"), bob, 409),
        req(Method::POST, format!("/shares/{id}/decline"), jane, 403),
        req(Method::POST, format!("/shares/{id}/decline"), rob, 404),
        req(Method::POST, format!("/shares/{id}/decline"), None, 401),
        req(
            Method::POST,
            format!("/shares/{declined_one}/decline"),
            bob,
            200,
        ),
        req(
            Method::POST,
            format!("/shares/{declined_one}/accept"),
            bob,
            409,
        ),
        req(Method::PATCH, format!("/shares/{id}"), jane, 400).json("{}"),
        req(Method::PATCH, format!("/shares/{id}"), bob, 403).json(r#"{"role": "full"}"#),
        req(Method::PATCH, format!("/shares/{id}"), rob, 404).json(r#"{"role": "full"}"#),
        req(Method::PATCH, format!("/shares/{id}"), None, 401).json(r#"{"role": "full"}"#),
        req(Method::PATCH, format!("/shares/{id}"), jane, 409)
            .json(r#"{"message": "m", "tstamp": "0000000000000001"}"#),
        req(Method::PATCH, format!("/shares/{id}"), jane, 200).json(r#"{"message": "m"}"#),
        req(
            Method::DELETE,
            format!("/shares/{id}?tstamp=xyz"),
            jane,
            400,
        ),
        req(Method::DELETE, format!("/shares/{id}"), rob, 404),
        req(Method::DELETE, format!("/shares/{id}"), None, 401),
        req(Method::DELETE, format!("/shares/{id}"), jane, 200),
        req(Method::DELETE, format!("/shares/{id}"), jane, 409),
        req(Method::GET, format!("/shares/{id}/accept"), bob, 405),
        req(Method::POST, format!("/shares/{id}/log"), bob, 405),
        req(Method::POST, "/shares/incoming", bob, 405),
        req(Method::POST, "/shares/outgoing", bob, 405),
        req(Method::POST, "/shares/redeem", bob, 201).json(redeem.clone()),
        req(Method::POST, "/shares/redeem", bob, 200).json(redeem.clone()),
        req(Method::POST, "/shares/redeem", rob, 410).json(redeem.clone()),
    ] {
        c.send(case).await;
    }

    // The task queue: the revocation above queued a rotation; every entry a delivery that
    // failed.
    let failed = loop {
        let (s, list) = app.get_json("/tasks?kind=webhook&state=failed", jane).await;
        assert_eq!(s, 200);
        if let Some(t) = list.as_array().unwrap().first() {
            break t["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (_, list) = app.get_json("/tasks?kind=rotate_share", jane).await;
    let rotation = list[0]["id"].as_str().unwrap().to_string();
    let readonly = app.token_for("readonly");
    for case in [
        req(Method::GET, "/tasks", jane, 200),
        req(Method::GET, "/tasks?state=lost", jane, 400),
        req(Method::GET, "/tasks", None, 401),
        req(Method::GET, format!("/tasks?oid={home}"), bob, 404),
        req(Method::GET, format!("/tasks/{rotation}"), jane, 200),
        req(Method::GET, format!("/tasks/{rotation}"), rob, 404),
        req(Method::GET, format!("/tasks/{rotation}"), None, 401),
        req(Method::POST, format!("/tasks/{failed}/retry"), jane, 200),
        req(Method::POST, format!("/tasks/{rotation}/retry"), jane, 409),
        req(Method::POST, format!("/tasks/{failed}/retry"), rob, 404),
        req(Method::POST, format!("/tasks/{failed}/retry"), None, 401),
        req(
            Method::POST,
            format!("/tasks/{failed}/retry"),
            Some(readonly.as_str()),
            403,
        ),
        req(Method::GET, format!("/tasks/{failed}/retry"), jane, 405),
        req(Method::POST, "/tasks", jane, 405),
        req(Method::POST, format!("/tasks/{failed}"), jane, 405),
    ] {
        c.send(case).await;
    }

    // Every documented path and method was exercised, so none is stale.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            if path == "/notifications" && m == "get" {
                continue; // its 200 is an endless stream; tests/operator_views.rs reads it
            }
            assert!(
                c.seen
                    .iter()
                    .any(|(p, mm, s)| p == path && mm == m && *s < 400),
                "{m} {path} is documented but never answered successfully here"
            );
        }
    }
}
