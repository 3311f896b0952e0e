//! Target 2: POST /write's multipart handling, over HTTP against the real server.
//!
//! Inputs: well-formed transactions (folders and files, small and past `INLINE_MAX_BYTES`)
//! and damaged ones: missing or doubled CRLFs, truncated bodies, part headers around and past
//! `MAX_PART_HEADER_BYTES`, header lines without a colon or with bytes that are not UTF-8,
//! parts in odd orders, preambles and epilogues, boundaries that do not match or are too
//! long, content types of every kind, byte-level mutations of all of it; sent by reqwest, or
//! over a raw TCP connection (chunked or with a length) where the bytes are ours to choose.
//! Properties: every request is answered, never with a 5xx; a refused request changes nothing
//! (metadata and blob files alike); the server answers /healthz afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gen::{self, Pick};
use super::Rng;
use crate::common::extra::{home, oid_of};
use crate::common::{spawn_app, TestApp};

/// How a request is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    Reqwest,
    /// Raw TCP with a Content-Length.
    Length,
    /// Raw TCP, chunked, in chunks of about this many bytes.
    Chunked(usize),
}

struct Req {
    via: Via,
    content_type: Option<Vec<u8>>,
    body: Vec<u8>,
    /// Must be answered 200 (a corpus file named `ok-...`).
    must_accept: bool,
}

/// A part of a multipart body, before it is written.
#[derive(Clone)]
struct Part {
    headers: Vec<Vec<u8>>,
    data: Vec<u8>,
}

fn disposition(name: &str, filename: Option<&str>) -> Vec<u8> {
    let mut h = format!("Content-Disposition: form-data; name=\"{name}\"");
    if let Some(f) = filename {
        h.push_str(&format!("; filename=\"{f}\""));
    }
    h.into_bytes()
}

/// A transaction the server can accept: folders and files under `home`.
fn valid_parts(rng: &mut Rng, home: &str, tag: &str) -> Vec<Part> {
    let n = rng.between(1, 3);
    let mut events = Vec::new();
    let mut files = Vec::new();
    for i in 0..n {
        let isfile = rng.one_in(2);
        let mut e = json!({"action": "C", "parentoid": home, "name": format!("{tag}-{i}")});
        if isfile {
            e["isfile"] = json!(true);
            let size = if rng.one_in(12) {
                rng.between(65_537, 90_000)
            } else {
                rng.size(4000)
            };
            let data = rng.bytes(size);
            if rng.one_in(6) {
                // A wrong checksum: refused after the part was read.
                e["sha256plain"] = json!("00".repeat(32));
            }
            files.push(Part {
                headers: vec![
                    disposition("file", Some(&format!("f{i}.bin"))),
                    b"Content-Type: application/octet-stream".to_vec(),
                ],
                data,
            });
        }
        events.push(e);
    }
    let name = *rng.pick(&["metadata", "meta", "file", "", "x\u{e9}"]);
    let mut meta_headers = vec![disposition(name, Some("metadata.json"))];
    if rng.one_in(2) {
        meta_headers.push(b"Content-Type: application/json".to_vec());
    }
    let mut parts = vec![Part {
        headers: meta_headers,
        data: Value::Array(events).to_string().into_bytes(),
    }];
    parts.extend(files);
    parts
}

fn write_body(
    parts: &[Part],
    boundary: &[u8],
    preamble: &[u8],
    epilogue: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut b = preamble.to_vec();
    for p in parts {
        b.extend_from_slice(b"--");
        b.extend_from_slice(boundary);
        b.extend_from_slice(b"\r\n");
        for h in &p.headers {
            b.extend_from_slice(h);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(&p.data);
        b.extend_from_slice(b"\r\n");
    }
    if close {
        b.extend_from_slice(b"--");
        b.extend_from_slice(boundary);
        b.extend_from_slice(b"--\r\n");
    }
    b.extend_from_slice(epilogue);
    b
}

fn boundary(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10u32) {
        0 => b"a".to_vec(),
        1 => vec![b'b'; rng.between(60, 260)],
        2 => b"----WebKitFormBoundary7MA4YWxkTrZu0gW".to_vec(),
        3 => b"with space".to_vec(),
        4 => b"'()+_,-./:=?".to_vec(),
        5 => b"\r\n".to_vec(),
        _ => format!("{:016x}", rng.next()).into_bytes(),
    }
}

fn content_type(rng: &mut Rng, b: &[u8]) -> Option<Vec<u8>> {
    let b = String::from_utf8_lossy(b).into_owned();
    let ct = match rng.below(24u32) {
        0 => return None,
        1 => format!("multipart/form-data; boundary=\"{b}\""),
        2 => format!("MULTIPART/FORM-DATA; BOUNDARY={b}"),
        3 => format!("multipart/mixed; boundary={b}"),
        4 => format!("multipart/form-data; boundary={b}; boundary=other"),
        5 => "multipart/form-data".into(),
        6 => "multipart/form-data; boundary=".into(),
        7 => "application/json".into(),
        8 => "text/plain".into(),
        9 => format!("multipart/form-data; boundary={b}x"),
        10 => format!("multipart/form-data;boundary={b};charset=utf-8"),
        11 => format!(
            "multipart/form-data; boundary={}",
            "z".repeat(rng.between(100, 9000))
        ),
        12 => format!("application/json; boundary={b}"),
        _ => format!("multipart/form-data; boundary={b}"),
    };
    Some(ct.into_bytes())
}

const DICT: &[&str] = &[
    "\r\n",
    "\r\n\r\n",
    "\n",
    "--",
    "\r\n--",
    "Content-Disposition: form-data; name=\"file\"\r\n",
    "Content-Type: text/plain\r\n",
    ":",
    ";",
    "\"",
    "filename=",
    "name=",
    "\u{0}",
    "\u{ff}",
];

/// Damages a well-formed list of parts and how they are written.
fn damage(
    rng: &mut Rng,
    parts: &mut Vec<Part>,
    preamble: &mut Vec<u8>,
    epilogue: &mut Vec<u8>,
    close: &mut bool,
) {
    for _ in 0..rng.between(1, 3) {
        let i = rng.below(parts.len());
        match rng.below(14u32) {
            0 => {
                // A header around the part-header limit (16 KiB).
                let n = *rng.pick(&[16_000usize, 16_300, 16_384, 16_500, 40_000]);
                parts[i]
                    .headers
                    .push(format!("X-Big: {}", "h".repeat(n)).into_bytes());
            }
            1 => {
                for _ in 0..rng.size(3000) {
                    parts[i].headers.push(b"X-Many: 1".to_vec());
                }
            }
            2 => parts[i].headers.push(b"no colon here".to_vec()),
            3 => parts[i]
                .headers
                .push(vec![b'X', b':', b' ', 0xff, 0xfe, 0x80]),
            4 => parts[i].headers.push(b" folded continuation".to_vec()),
            5 => parts[i].headers.clear(),
            6 => {
                let h = rng
                    .pick(&[
                        &b"Content-Disposition: form-data; name="[..],
                        b"Content-Disposition: form-data; name=\"a\\\"b\"",
                        b"Content-Disposition: form-data; name=\"m\"; filename*=UTF-8''%e2%82%ac",
                        b"Content-Disposition: attachment",
                        b"Content-Disposition: form-data; name=\"unterminated",
                        b"content-disposition:form-data;name=metadata",
                    ])
                    .to_vec();
                match parts[i].headers.first_mut() {
                    Some(first) => *first = h,
                    None => parts[i].headers.push(h),
                }
            }
            7 if parts.len() > 1 => {
                let j = rng.below(parts.len());
                parts.swap(i, j);
            }
            8 => {
                let p = parts[i].clone();
                parts.insert(i, p);
            }
            9 => {
                parts.remove(i);
                if parts.is_empty() {
                    return;
                }
            }
            10 => {
                let n = *rng.pick(&[10usize, 16_000, 16_385, 20_000]);
                *preamble = vec![b'p'; n];
            }
            11 => {
                let n = rng.size(2000);
                *epilogue = rng.bytes(n);
            }
            12 => *close = false,
            _ => {
                let data = std::mem::take(&mut parts[i].data);
                parts[i].data = gen::mutate(rng, &data, super::metadata::DICT, &[]);
            }
        }
    }
}

/// Replaces the `n`th CRLF of `b` by a bare LF, or removes it.
fn break_crlf(rng: &mut Rng, b: &mut Vec<u8>) {
    let at: Vec<usize> = b
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == b"\r\n")
        .map(|(i, _)| i)
        .collect();
    if at.is_empty() {
        return;
    }
    let i = *rng.pick(&at);
    if rng.one_in(2) {
        b.remove(i);
    } else {
        b.drain(i..i + 2);
    }
}

fn generate(rng: &mut Rng, home: &str, tag: &str) -> Req {
    let via = match rng.below(6u32) {
        0 => Via::Length,
        1 => Via::Chunked(rng.size(5000).max(1)),
        _ => Via::Reqwest,
    };
    let b = if rng.one_in(3) {
        boundary(rng)
    } else {
        b"XyZ".to_vec()
    };
    let mut parts = valid_parts(rng, home, tag);
    let (mut preamble, mut epilogue, mut close) = (Vec::new(), Vec::new(), true);
    let damaged = !rng.one_in(4);
    if damaged {
        damage(rng, &mut parts, &mut preamble, &mut epilogue, &mut close);
    }
    let body_b = if rng.one_in(8) {
        boundary(rng)
    } else {
        b.clone()
    };
    let mut body = write_body(&parts, &body_b, &preamble, &epilogue, close);
    if damaged {
        match rng.below(6u32) {
            0 => break_crlf(rng, &mut body),
            1 => {
                let n = rng.below(body.len() + 1);
                body.truncate(n);
            }
            2 => body = gen::mutate(rng, &body, DICT, &[]),
            _ => {}
        }
    }
    let content_type = if rng.one_in(4) {
        content_type(rng, &b)
    } else {
        Some(
            format!(
                "multipart/form-data; boundary={}",
                String::from_utf8_lossy(&b)
            )
            .into_bytes(),
        )
    };
    Req {
        via,
        content_type,
        body,
        must_accept: false,
    }
}

/// Files under the blob store's folder.
fn blob_files(data_dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![data_dir.join("blobs")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                n += 1;
            }
        }
    }
    n
}

/// A request is answered within this, or the server stalled.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

/// Sends a request; its status and body.
async fn send(app: &TestApp, token: &str, req: &Req) -> Result<(u16, String), String> {
    // A content type reqwest will not send (a CR or LF in it) goes raw: the server must
    // cope with the broken header block it makes.
    let sendable = req
        .content_type
        .as_deref()
        .is_none_or(|ct| reqwest::header::HeaderValue::from_bytes(ct).is_ok());
    match req.via {
        Via::Reqwest if sendable => {
            let mut r = app
                .client
                .post(format!("{}/write", app.base))
                .header("userpolicy", token)
                .body(req.body.clone());
            if let Some(ct) = &req.content_type {
                r = r.header(
                    "content-type",
                    reqwest::header::HeaderValue::from_bytes(ct).map_err(|e| e.to_string())?,
                );
            }
            let resp = r.send().await.map_err(|e| format!("no answer: {e:?}"))?;
            let status = resp.status().as_u16();
            Ok((status, resp.text().await.unwrap_or_default()))
        }
        _ => raw(app, token, req).await,
    }
}

async fn raw(app: &TestApp, token: &str, req: &Req) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(app.addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "POST /write HTTP/1.1\r\nHost: {}\r\nuserpolicy: {token}\r\nConnection: close\r\n",
        app.addr
    )
    .into_bytes();
    if let Some(ct) = &req.content_type {
        head.extend_from_slice(b"Content-Type: ");
        head.extend_from_slice(ct);
        head.extend_from_slice(b"\r\n");
    }
    let mut out = head;
    match req.via {
        Via::Chunked(size) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in req.body.chunks(size) {
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        _ => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", req.body.len()).as_bytes());
            out.extend_from_slice(&req.body);
        }
    }
    // The server may answer (and close) before it has read everything: a write error is not
    // the end of the request, the answer is.
    let _ = s.write_all(&out).await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "no answer: {:?}",
                text.chars().take(200).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Reads a corpus file: `.body` is a content-type line then the body (sent by reqwest);
/// `.http` a content-type line then the body sent raw with a length. `{HOME}` is the
/// caller's home folder; a file named `ok-...` must be accepted.
fn from_corpus(name: &str, bytes: &[u8], home: &str) -> Req {
    // Byte for byte: a body may hold bytes that are not UTF-8.
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(i) = rest.windows(6).position(|w| w == b"{HOME}") {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(home.as_bytes());
        rest = &rest[i + 6..];
    }
    out.extend_from_slice(rest);
    let bytes = out;
    let (ct, body) = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => (bytes[..i].to_vec(), bytes[i + 1..].to_vec()),
        None => (bytes.clone(), Vec::new()),
    };
    let ct = (!ct.is_empty()).then_some(ct);
    Req {
        via: if name.ends_with(".http") {
            Via::Length
        } else {
            Via::Reqwest
        },
        content_type: ct,
        body,
        must_accept: name.starts_with("ok-"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_bodies_of_every_shape_are_answered_below_500_and_refusals_change_nothing() {
    let app = spawn_app().await;
    let token = app.token_for("jane");
    let home = oid_of(&home(&app, &token, "jane.doe@deciphernow.com").await);

    let corpus: Vec<(String, Req)> = super::corpus_to_replay("multipart")
        .into_iter()
        .map(|(n, b)| {
            let r = from_corpus(&n, &b, &home);
            (format!("corpus {n}"), r)
        })
        .collect();
    let generated = super::seeds("multipart", 600).into_iter().map(|seed| {
        let r = generate(&mut Rng(seed), &home, &format!("{seed:x}"));
        (format!("seed {seed:#018x}"), r)
    });

    let started = Instant::now();
    let (mut n, mut accepted, mut resets, mut slowest) = (0, 0, 0, Duration::ZERO);
    let mut failures = Vec::new();
    // What is stored, taken again only when a request may have changed it (a 200), so that a
    // long run does not hash the store twice per request.
    let state = || (app.fingerprint(), blob_files(&app.data_dir));
    let mut before = state();
    for (label, req) in corpus.into_iter().chain(generated) {
        let t = Instant::now();
        let mut answer = tokio::time::timeout(ANSWER_LIMIT, send(&app, &token, &req)).await;
        if matches!(answer, Ok(Err(_))) {
            // Known, and left to http/mod.rs (see the fuzzing report): the server refuses some
            // requests before reading their body and then closes the connection, and closing
            // with unread bytes resets it, which can destroy the answer before the client reads
            // it (2 in 100 refused 2 MB bodies; here, once in a few thousand under load). The
            // request is sent again, once, on a fresh connection; twice is a failure.
            resets += 1;
            answer = tokio::time::timeout(ANSWER_LIMIT, send(&app, &token, &req)).await;
        }
        slowest = slowest.max(t.elapsed());
        n += 1;
        let problem = match answer {
            Err(_) => Some(format!("no answer within {ANSWER_LIMIT:?}")),
            Ok(Err(e)) => Some(e),
            Ok(Ok((status, body))) if status >= 500 => Some(format!("answered {status}: {body}")),
            Ok(Ok((200, _))) => {
                accepted += 1;
                before = state();
                None
            }
            Ok(Ok((status, body))) if req.must_accept => {
                Some(format!("answered {status} ({body}), not 200"))
            }
            Ok(Ok((status, body))) => {
                let after = state();
                let changed = after != before;
                before = after;
                changed.then(|| format!("refused with {status} ({body}), yet the store changed"))
            }
        };
        if let Some(p) = problem {
            let saved = super::save_failure("multipart", &label, &req.body);
            let replay = label
                .strip_prefix("seed ")
                .map(|s| format!("; replay: VELLUM_FUZZ_REPLAY=multipart:{s}"))
                .unwrap_or_default();
            failures.push(format!(
                "multipart {label} ({:?}, content type {:?}): {p}\n  body: {}\n  saved: {}{replay}",
                req.via,
                req.content_type.as_deref().map(String::from_utf8_lossy),
                super::excerpt(&req.body),
                saved.display()
            ));
        }
        if n % 50 == 0 || !failures.is_empty() {
            let (s, _) = app.get_json("/healthz", None).await;
            if s != 200 {
                failures.push(format!("/healthz answered {s} after {label}"));
            }
        }
        if failures.len() >= 5 {
            break;
        }
    }
    let (s, _) = app.get_json("/healthz", None).await;
    assert_eq!(s, 200, "/healthz after the run");
    println!(
        "fuzz multipart: {n} cases ({accepted} accepted, {resets} sent again after a reset) in \
         {:.2?}, slowest answer {slowest:.2?}",
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
