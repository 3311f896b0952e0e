//! Requests written by an attacker (issue "Hardening first", items 2–5 and 7): each case
//! asserts its status, that the server stayed alive, that a bystander's /healthz, one-event
//! write and 4 KiB read were answered promptly meanwhile, and that the store is unchanged
//! where the request was refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use vellum::config::Config;
use vellum::config::SqliteConfig;
use vellum::identity::TokenSigner;
use vellum::model::{Action, Oid};
use vellum::store::Store;

use crate::common::extra::*;
use crate::common::{self, TestApp};

/// What the bystander may wait at the 99th percentile while an attack runs. The issue's goal
/// is 250 ms; `benches/hostile.sh` runs these tests on the release build with exactly that
/// (`VELLUM_HOSTILE_P99_MS=250`). The suite runs unoptimised code beside other tests on
/// shared two-core machines, where it asserts 1 s: four times the goal, and still a tenth
/// of the stalls these attacks once caused (10-16 s).
fn p99_goal() -> Duration {
    let ms = std::env::var("VELLUM_HOSTILE_P99_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    Duration::from_millis(ms)
}

/// One attack at a time: two at once would measure each other. Every test here holds it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Another client going about its business: GET /healthz, a one-event write and a 4 KiB read,
/// in turn, as fast as answers come, until stopped.
struct Bystander {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<(&'static str, Duration, u16)>>,
}

impl Bystander {
    async fn start(app: &TestApp) -> Bystander {
        let carol =
            app.token(&json!({"label": "carol", "values": {"email": ["carol@example.com"]}}));
        let home = oid_of(&home(app, &carol, "carol@example.com").await);
        let data = vec![b'x'; 4096];
        let file = write_parts(
            app,
            Some(&carol),
            &json!([{"action": "C", "parentoid": home, "name": "four-k", "isfile": true}]),
            &[("four-k", &data)],
        )
        .await;
        assert_eq!(file.status(), 200);
        let stop = Arc::new(AtomicBool::new(false));
        let (base, flag) = (app.base.clone(), stop.clone());
        let handle = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seen = Vec::new();
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                let s = client.get(format!("{base}/healthz")).send().await;
                seen.push(("healthz", t.elapsed(), s.map_or(0, |r| r.status().as_u16())));
                let t = Instant::now();
                let form = reqwest::multipart::Form::new().text(
                    "meta",
                    json!([{"action": "C", "parentoid": home, "name": format!("b{i}")}])
                        .to_string(),
                );
                let s = client
                    .post(format!("{base}/write"))
                    .header("userpolicy", &carol)
                    .multipart(form)
                    .send()
                    .await;
                seen.push(("write", t.elapsed(), s.map_or(0, |r| r.status().as_u16())));
                let t = Instant::now();
                let s = client
                    .get(format!("{base}/stream/{home}/four-k"))
                    .header("userpolicy", &carol)
                    .send()
                    .await;
                let status = match s {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        let len = r.bytes().await.map_or(0, |b| b.len());
                        if len == 4096 {
                            st
                        } else {
                            0
                        }
                    }
                    Err(_) => 0,
                };
                seen.push(("read", t.elapsed(), status));
            }
            seen
        });
        Bystander { stop, handle }
    }

    /// Stops, and asserts every request was answered 200 within the goal at p99.
    async fn finish(self, case: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.handle.await.unwrap();
        for kind in ["healthz", "write", "read"] {
            let mut times: Vec<Duration> = seen
                .iter()
                .filter(|(k, _, _)| *k == kind)
                .map(|(_, t, _)| *t)
                .collect();
            let failed: Vec<u16> = seen
                .iter()
                .filter(|(k, _, s)| *k == kind && *s != 200)
                .map(|(_, _, s)| *s)
                .collect();
            assert!(
                failed.is_empty(),
                "{case}: bystander {kind} failed: {failed:?}"
            );
            assert!(!times.is_empty(), "{case}: bystander made no {kind}");
            times.sort();
            let p99 = times[(times.len() * 99).div_ceil(100) - 1];
            let max = *times.last().unwrap();
            eprintln!(
                "{case}: bystander {kind}: {} requests, p99 {p99:?}, max {max:?}",
                times.len()
            );
            let goal = p99_goal();
            assert!(
                p99 <= goal,
                "{case}: bystander {kind} p99 {p99:?} > {goal:?}"
            );
        }
    }
}

async fn alive(app: &TestApp) {
    let (s, body) = app.get_json("/healthz", None).await;
    assert_eq!(s, 200, "the server must still answer: {body}");
}

/// How long each attack is kept up while the bystander measures.
const ATTACK: Duration = Duration::from_secs(3);

/// Runs `attackers` copies of `attack`, each again and again for [`ATTACK`], while a
/// bystander goes about its business; then checks the bystander, that the server is alive,
/// and that the store is unchanged (the bystander's own writes aside).
async fn under_attack<F, Fut>(app: &TestApp, case: &str, attackers: usize, attack: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let before = common::fingerprint_without(&app.data_dir, "carol");
    under_attack_keeping(app, case, attackers, attack).await;
    assert_eq!(
        before,
        common::fingerprint_without(&app.data_dir, "carol"),
        "{case}: the attack changed the store"
    );
}

/// [`under_attack`] for an attack made of writes that succeed.
async fn under_attack_keeping<F, Fut>(app: &TestApp, case: &str, attackers: usize, attack: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let by = Bystander::start(app).await;
    let attack = Arc::new(attack);
    let until = Instant::now() + ATTACK;
    let mut runs = Vec::new();
    for _ in 0..attackers {
        let attack = attack.clone();
        runs.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                attack().await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for r in runs {
        total += r.await.unwrap();
    }
    eprintln!("{case}: {total} attacks by {attackers} attackers in {ATTACK:?}");
    by.finish(case).await;
    alive(app).await;
}

/// POST /write of a JSON body; the status and the error code (if any).
async fn post(base: &str, token: Option<&str>, body: &Value) -> (u16, String, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/write"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("userpolicy", t);
    }
    let (s, v) = status_json(req.send().await.unwrap()).await;
    let code = v["error"]["code"].as_str().unwrap_or("").to_string();
    (s, code, v)
}

fn rego(text: &str) -> Value {
    json!({ "rego": text })
}

/// Jane's home, for writes that pass the precheck and reach the compiler.
async fn janes_home(app: &TestApp) -> (String, String) {
    let jane = app.token_for("jane");
    let h = oid_of(&home(app, &jane, JANE).await);
    (jane, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_would_overflow_the_parser_is_refused_before_anything() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = common::spawn_app().await;
    let (jane, h) = janes_home(&app).await;
    let minus = format!("package p\nx := {}1", "-".repeat(1000));
    let base = app.base.clone();
    under_attack(&app, "1,000 minus signs", 4, move || {
        let (base, jane, h, minus) = (base.clone(), jane.clone(), h.clone(), minus.clone());
        async move {
            // Anonymous, at the root: refused (the root is readable, not writable) before
            // the policy is even compiled.
            let body = json!([{"action": "C", "parentoid": "1", "name": "x", "objectpolicy": rego(&minus)}]);
            let (s, code, _) = post(&base, None, &body).await;
            assert_eq!((s, code.as_str()), (403, "permission_denied"));
            // Where the caller may write, the policy is refused by counting.
            let body = json!([{"action": "C", "parentoid": h, "name": "x", "objectpolicy": rego(&minus)}]);
            let (s, code, v) = post(&base, Some(&jane), &body).await;
            assert_eq!((s, code.as_str()), (400, "bad_policy"), "{v}");
            assert!(v.to_string().contains("unary minus"), "{v}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_policies_are_refused_as_opa_refuses_them() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = common::spawn_app().await;
    let (jane, h) = janes_home(&app).await;
    let base = app.base.clone();
    under_attack(&app, "recursion", 4, move || {
        let (base, jane, h) = (base.clone(), jane.clone(), h.clone());
        async move {
            for text in [
                "package p\nimport rego.v1\nf(x) := y if { y := f(x) }\nR if { f(1) }\n",
                "package p\nimport rego.v1\nf(n) := 0 if n == 0\nf(n) := f(n-1)+1 if n > 0\nR if { f(200000) > 0 }\n",
                // Behind a rule only anonymous callers reach: refused all the same.
                "package p\nimport rego.v1\nf(x) := y if { y := f(x) }\nR if { input.claims.label == \"anonymous\"; f(1) }\nU if true\nP if true\n",
            ] {
                let body = json!([{"action": "C", "parentoid": h, "name": "r", "objectpolicy": rego(text)}]);
                let (s, _, v) = post(&base, Some(&jane), &body).await;
                assert_eq!(s, 400, "{v}");
                assert!(v.to_string().contains("rego_recursion_error"), "{v}");
            }
        }
    })
    .await;
}

/// A server on a data folder that survives restarts, with one signing key.
struct Restartable {
    dir: tempfile::TempDir,
    pem: String,
    jwt_pub: String,
}

impl Restartable {
    fn new() -> Restartable {
        let (pem, jwt_pub) = common::es512_keys();
        Restartable {
            dir: tempfile::tempdir().unwrap(),
            pem,
            jwt_pub,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn start(&self) -> (TestApp, oneshot::Sender<()>) {
        let args = vec![
            "vellum".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--jwt-pub".into(),
            self.jwt_pub.clone(),
            "--users-file".into(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/users.json")
                .display()
                .to_string(),
        ];
        let serve = vellum::cli::Cli::try_parse_from(args).unwrap().serve;
        let app = vellum::app::Application::build(Config::from_args(serve).unwrap())
            .await
            .unwrap();
        let addr = app.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        let t = TestApp::attach(
            addr,
            TokenSigner::from_pem(&self.pem).unwrap(),
            self.data_dir(),
        );
        (t, tx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_stored_policy_cannot_stop_the_server_from_starting_or_serving() {
    let _one = ONE_AT_A_TIME.lock().await;
    let r = Restartable::new();
    let (app, stop) = r.start().await;
    let (jane, h) = janes_home(&app).await;
    let victim = app
        .write_one(
            Some(&jane),
            json!({"action": "C", "parentoid": h, "name": "victim",
                   "objectpolicy": everyone(&["R", "X"]), "allowpartialpermissions": true}),
        )
        .await;
    let oid: Oid = oid_of(&victim).parse().unwrap();
    drop(app);
    let _ = stop.send(());
    // What an older version could have stored: a recursive function, reached by anonymous
    // callers only, written straight into the store.
    let hostile = "package p\nimport rego.v1\nf(x) := y if { y := f(x) }\nR if { input.claims.label == \"anonymous\"; f(1) }\nU if true\nP if true\n";
    {
        let store = Store::open(&r.data_dir(), &SqliteConfig::NORMAL, None).unwrap();
        store
            .write(move |ctx| -> Result<(), vellum::store::StoreError> {
                let mut e = ctx.current(oid)?.unwrap().event;
                e.checkedtstamp = e.tstamp;
                e.tstamp = ctx.next_tstamp();
                e.action = Action::U;
                e.objectpolicy = Some(json!({ "rego": hostile }));
                ctx.append(&e)
            })
            .await
            .unwrap();
    }
    // It starts, and every way an anonymous caller can make it evaluate the policy answers.
    let (app, _stop) = r.start().await;
    let base = app.base.clone();
    under_attack(&app, "stored recursive policy", 4, move || {
        let base = base.clone();
        async move {
            let r = reqwest::get(format!("{base}/props/{oid}")).await.unwrap();
            assert_eq!(r.status(), 404);
            // Its history shows the version the old policy let everyone read, not this one.
            let r = reqwest::get(format!("{base}/history/{oid}")).await.unwrap();
            let (s, v) = status_json(r).await;
            assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(1)), "{v}");
            let r = reqwest::get(format!("{base}/stream/{oid}")).await.unwrap();
            assert_eq!(r.status(), 404);
        }
    })
    .await;
    // The feed reads it too, and carries on.
    let mut feed = app
        .client
        .get(format!("{}/notifications?since=0", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), feed.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some());
    drop(feed);
    alive(&app).await;
}

/// Stores an object readable by anyone under a Rego policy `text`.
async fn object_with(app: &TestApp, jane: &str, home: &str, name: &str, text: &str) -> String {
    let e = app
        .write_one(
            Some(jane),
            json!({"action": "C", "parentoid": home, "name": name,
                   "objectpolicy": rego(text), "allowpartialpermissions": true}),
        )
        .await;
    oid_of(&e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtins_that_never_return_or_grow_without_bound_stop_at_their_budgets() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = common::spawn_app().await;
    let (jane, h) = janes_home(&app).await;
    let mut oids = Vec::new();
    for (name, test) in [
        ("units", "units.parse(\"1e999999999G\") > 0"),
        ("bytes", "units.parse_bytes(\"1e999999999GB\") > 0"),
        ("number", "to_number(\"1e999999999\") > 0"),
        ("doubling", "count(x20) > 0"),
    ] {
        let mut text = String::from(
            "package p\nimport rego.v1\nx0 := [1 | some i in numbers.range(1, 1000)]\n",
        );
        for i in 1..=20 {
            text.push_str(&format!("x{i} := array.concat(x{}, x{})\n", i - 1, i - 1));
        }
        text.push_str(&format!("R if {{ {test} }}\nX if {{ {test} }}\n"));
        oids.push(object_with(&app, &jane, &h, name, &text).await);
    }
    let rss_before = rss_kb();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    // Eight concurrent anonymous readers, each reading every one in turn. Each reader is a
    // caller of its own (a claim that differs) so no two share a cached answer.
    let base = app.base.clone();
    let readers: Arc<Vec<String>> = Arc::new(
        (0..256)
            .map(|n| app.token(&json!({"label": format!("reader{n}"), "values": {}})))
            .collect(),
    );
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    under_attack(&app, "unbounded builtins", 8, move || {
        let (base, oids) = (base.clone(), oids.clone());
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let who = readers[n % readers.len()].clone();
        async move {
            let client = reqwest::Client::new();
            for oid in &oids {
                let r = client
                    .get(format!("{base}/props/{oid}"))
                    .header("userpolicy", &who)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 404);
            }
        }
    })
    .await;
    let peak = peak_rss_kb() - rss_before;
    eprintln!(
        "peak RSS growth under eight hostile readers: {} MiB",
        peak / 1024
    );
    // At most POLICY_CONCURRENCY evaluations hold up to POLICY_MEMORY (64 MiB) each, and the
    // doubling stops at it.
    assert!(peak < 700 * 1024, "peak RSS grew by {} MiB", peak / 1024);
}

fn status_kb(field: &str) -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kb() -> i64 {
    status_kb("VmRSS:")
}

fn peak_rss_kb() -> i64 {
    status_kb("VmHWM:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_that_take_long_to_compile_do_not_stall_anyone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = common::spawn_app().await;
    let (jane, h) = janes_home(&app).await;
    // 65 KB nested 6 deep: once 2.6 s of compiling on the async threads, per event.
    let mut nested = String::from("package p\nimport rego.v1\n");
    while nested.len() < 63_000 {
        nested.push_str("x := [[[[[[1]]]]]]\n");
    }
    // Four of them per write, about 252 KB.
    let many = |parent: &str| -> Value {
        Value::Array(
            (0..4)
                .map(|i| {
                    json!({"action": "C", "parentoid": parent, "name": format!("n{i}"),
                           "objectpolicy": rego(&format!("{nested}# {i}\n"))})
                })
                .collect(),
        )
    };
    let (anon, janes) = (many("1"), many(&h));
    let base = app.base.clone();
    under_attack(&app, "nested policies", 4, move || {
        let (base, jane, anon, janes) = (base.clone(), jane.clone(), anon.clone(), janes.clone());
        async move {
            // Anonymously at the root: refused before compiling. By Jane in her home: refused
            // by counting, before regorus parses anything.
            let (s, _, v) = post(&base, None, &anon).await;
            assert_eq!(s, 403, "{v}");
            let (s, _, v) = post(&base, Some(&jane), &janes).await;
            assert_eq!(s, 400, "{v}");
            assert!(v.to_string().contains("too big for its nesting"), "{v}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_of_slow_policies_hold_the_writer_no_longer_than_their_budget() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = common::spawn_app().await;
    let (jane, h) = janes_home(&app).await;
    let spin = "count([x | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x == y]) > 0";
    // 100 creates, each with its own policy that runs until POLICY_TIMEOUT for Jane, checked
    // on the writer (the lock-out check). Once this held the writer 10 s per transaction.
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let base = app.base.clone();
    under_attack(&app, "slow policies on the writer", 2, move || {
        let (base, jane, h) = (base.clone(), jane.clone(), h.clone());
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let events: Vec<Value> = (0..100)
                .map(|i| {
                    json!({"action": "C", "parentoid": h, "name": format!("s{i}"),
                           "objectpolicy": rego(&format!("package p{n}x{i}\nimport rego.v1\nU if {spin}\nP if {spin}\n"))})
                })
                .collect();
            let t = Instant::now();
            let (s, code, v) = post(&base, Some(&jane), &Value::Array(events)).await;
            assert_eq!((s, code.as_str()), (403, "would_lock_out"), "{v}");
            eprintln!("100 slow policies refused in {:?}", t.elapsed());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_is_refused_while_it_is_read() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = common::spawn_app().await;
    let jane = app.token_for("jane");
    let rss_before = rss_kb();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let base = app.base.clone();
    under_attack(&app, "oversized metadata", 1, move || {
        let (base, jane) = (base.clone(), jane.clone());
        async move {
            let client = reqwest::Client::new();
            // 60 MB of [0,0,...] (30 million events), and one event holding 30 million
            // values, each made as it is sent so that only the server holds it.
            for (head, tail, want) in [
                (&b"["[..], &b"0]"[..], "too_many_events"),
                (
                    &br#"[{"action":"C","parentoid":"1","name":"x","custom":["#[..],
                    &b"0]}]"[..],
                    "metadata_too_large",
                ),
            ] {
                let r = client
                    .post(format!("{base}/write"))
                    .header("userpolicy", &jane)
                    .header("content-type", "application/json")
                    .body(zeros_body(head, tail, 60 << 20))
                    .send()
                    .await
                    .unwrap();
                let (s, v) = status_json(r).await;
                assert_eq!((s, v["error"]["code"].as_str()), (413, Some(want)), "{v}");
            }
        }
    })
    .await;
    let peak = peak_rss_kb() - rss_before;
    eprintln!("peak RSS growth under 60 MB bodies: {} MiB", peak / 1024);
    // The body (60 MiB, and its buffer's last doubling), at most a million parsed values, and
    // what the allocator keeps a moment before giving it back: ~300 MiB here, where one
    // such body once took 2,221 MiB.
    assert!(peak < 400 * 1024, "peak RSS grew by {} MiB", peak / 1024);
}

/// A body of `len` bytes, `head`, then `0,0,...`, then `tail`, made as it is sent.
fn zeros_body(head: &'static [u8], tail: &'static [u8], len: usize) -> reqwest::Body {
    const CHUNK: usize = 64 << 10;
    let middle = (len - head.len() - tail.len()) / 2 * 2;
    let chunks = middle / CHUNK + 1;
    let stream = futures_util::stream::iter((0..=chunks + 1).map(move |i| {
        let bytes = if i == 0 {
            bytes::Bytes::from_static(head)
        } else if i == chunks + 1 {
            bytes::Bytes::from_static(tail)
        } else {
            let n = CHUNK.min(middle.saturating_sub((i - 1) * CHUNK));
            bytes::Bytes::from(b"0,".repeat(n / 2))
        };
        Ok::<_, std::io::Error>(bytes)
    }));
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test]
async fn a_chain_of_creates_by_reference_stops_at_the_folder_depth_limit() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = common::spawn_app_with(&["--max-folder-depth", "20"]).await;
    let (jane, h) = janes_home(&app).await;
    let mut events = vec![json!({"action": "C", "parentoid": h, "name": "d0"})];
    for i in 1..100 {
        events.push(json!({"action": "C", "name": format!("d{i}"),
                           "references": [{"address": -1, "from": "oid", "to": "parentoid"}]}));
    }
    // Root, world, home: three folders above d0, so d18 would be 21 deep.
    let err = refused(
        &app,
        400,
        Some(18),
        app.write(Some(&jane), &Value::Array(events)),
    )
    .await;
    assert_eq!(err["code"], "too_deep");
    // The same chain within the limit goes through, and each response event is small.
    let mut events = vec![json!({"action": "C", "parentoid": h, "name": "d0"})];
    for i in 1..18 {
        events.push(json!({"action": "C", "name": format!("d{i}"),
                           "references": [{"address": -1, "from": "oid", "to": "parentoid"}]}));
    }
    let out = app.write_ok(Some(&jane), &Value::Array(events)).await;
    assert_eq!(out.len(), 18);
    let deepest = out.last().unwrap()["fulldir"].as_str().unwrap().len();
    assert!(deepest <= 20 * 17 + 1, "{deepest}");
}

#[tokio::test]
async fn what_a_caller_cannot_read_is_a_plain_404_whatever_is_there() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = common::spawn_app().await;
    let (jane, h) = janes_home(&app).await;
    let bob = app.token_for("bob");
    let secret = app
        .write_one(
            Some(&jane),
            json!({"action": "C", "parentoid": h, "name": "secret"}),
        )
        .await;
    let gone = app
        .write_one(
            Some(&jane),
            json!({"action": "C", "parentoid": h, "name": "gone"}),
        )
        .await;
    app.write_one(
        Some(&jane),
        json!({"action": "D", "oid": oid_of(&gone), "tstamp": gone["tstamp"]}),
    )
    .await;
    let nowhere = "0123456789abcdef";
    let (secret, gone) = (oid_of(&secret), oid_of(&gone));
    // U, D and P of an object Bob cannot read, of a deleted one, and of none at all, with a
    // stale tstamp or none: the same answer, with nothing but the oid he sent.
    let mut answers = Vec::new();
    for oid in [secret.as_str(), gone.as_str(), nowhere] {
        for action in ["U", "D", "P"] {
            for tstamp in [None, Some("0000000000000001")] {
                let mut ev = json!({"action": action, "oid": oid, "name": "x"});
                if let Some(t) = tstamp {
                    ev["tstamp"] = json!(t);
                }
                let err = refused(&app, 404, Some(0), app.write(Some(&bob), &json!([ev]))).await;
                let message = err["message"].as_str().unwrap().replace(oid, "OID");
                answers.push((err["code"].as_str().unwrap().to_string(), message));
            }
        }
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "the answers differ: {answers:?}"
    );
    assert_eq!(answers[0].0, "not_found");
    // Upsert by name into a folder Bob cannot list: no name lookup, no oid.
    for name in ["secret", "free"] {
        let ev = json!([{"action": "U", "parentoid": h, "name": name}]);
        let err = refused(&app, 404, Some(0), app.write(Some(&bob), &ev)).await;
        assert!(!err["message"].as_str().unwrap().contains(&secret), "{err}");
    }
    // Jane, who may read them, still hears the precise reasons.
    let ev = json!([{"action": "U", "oid": secret, "tstamp": "0000000000000001"}]);
    let err = refused(&app, 409, Some(0), app.write(Some(&jane), &ev)).await;
    assert_eq!(err["code"], "stale_tstamp");
    let ev = json!([{"action": "U", "oid": gone, "name": "x"}]);
    let err = refused(&app, 404, Some(0), app.write(Some(&jane), &ev)).await;
    assert_eq!(err["code"], "deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_policy_read_by_a_hundred_feeds_does_not_stall_anyone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = common::spawn_app().await;
    let (jane, h) = janes_home(&app).await;
    // A hundred callers (each its own claims, so nothing is shared between them) follow the
    // feed; each new event's policy runs until POLICY_TIMEOUT for each of them. Once this
    // stalled /healthz for up to 10 s.
    let mut feeds = Vec::new();
    for n in 0..100 {
        let who = app.token(&json!({"label": format!("follower{n}"), "values": {}}));
        let resp = app
            .client
            .get(format!("{}/notifications", app.base))
            .header("userpolicy", who)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        feeds.push(tokio::spawn(async move {
            let mut resp = resp;
            let mut frames = 0usize;
            while let Ok(Some(_)) = resp.chunk().await {
                frames += 1;
            }
            frames
        }));
    }
    let spin = "count([x | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x == y]) > 0";
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let base = app.base.clone();
    under_attack_keeping(&app, "a hundred feeds", 1, move || {
        let (base, jane, h) = (base.clone(), jane.clone(), h.clone());
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let text = format!("package f{n}\nimport rego.v1\nR if {spin}\n");
            let body = json!([{"action": "C", "parentoid": h, "name": format!("f{n}"),
                               "objectpolicy": rego(&text), "allowpartialpermissions": true}]);
            let (s, _, v) = post(&base, Some(&jane), &body).await;
            assert_eq!(s, 200, "{v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    drop(app);
    for f in feeds {
        f.abort();
    }
}
