//! The command line as an outsider uses it (SPEC §1): the real `vellum` binary, configured
//! through the environment and flags, `vellum token` against the embedded dev key,
//! `--help`, and bad flags. Every child process is killed by a guard, even when an
//! assertion fails.

use crate::common;
use crate::common::external;
use crate::common::extra;
use crate::common::process::{run, vellum, Server};
use crate::common::rng;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use common::{claims, es512_keys};
use external::free_port;
use extra::*;
use rng::Rng;
use serde_json::{json, Value};
use vellum::identity::TokenSigner;

fn manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn masterkey() -> String {
    use rand_core::RngCore;
    let mut k = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut k);
    base64::engine::general_purpose::STANDARD.encode(k)
}

async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    status_json(get_with(base, path, headers).await).await
}

async fn write(base: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .part("metadata", reqwest::multipart::Part::text(body.to_string()));
    let mut req = reqwest::Client::new()
        .post(format!("{base}/write"))
        .multipart(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    status_json(req.send().await.unwrap()).await
}

fn jwt_payload(token: &str) -> Value {
    let p = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn serve_configured_by_environment_accepts_a_minted_token_and_user_dn() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (pem, jwt_pub) = es512_keys();
    let mk = masterkey();
    let users = manifest("fixtures/users.json").display().to_string();
    let envs = [
        ("JWT_PUB", jwt_pub.as_str()),
        ("MASTERKEY", mk.as_str()),
        ("USERS_FILE", users.as_str()),
    ];
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data_s = data.display().to_string();
    let mut server = Server::start(
        tmp.path(),
        &["serve", "--listen", &listen, "--data-dir", &data_s],
        &envs,
        port,
    );
    server.wait_healthy().await;
    assert!(
        store_in(&data).exists(),
        "the store (SQLite file, or local blobs) lives in --data-dir"
    );

    // A token minted with the matching private key.
    let jane = TokenSigner::from_pem(&pem)
        .unwrap()
        .sign(&claims("jane"), Duration::from_secs(3600))
        .unwrap();
    let (s, me) = get(&server.base, "/self", &[("userpolicy", &jane)]).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["label"], "asjane");
    let (s, out) = write(
        &server.base,
        &[("userpolicy", &jane)],
        &json!([{"action": "C", "parentoid": "1/world", "name": JANE}]),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out[0]["userpolicy"]["label"], "asjane");
    assert_eq!(out[0]["jwthash"], sha256_hex(&jane));

    // JWT_PUB is the key in force: another key's token is refused.
    let other = TokenSigner::from_pem(&es512_keys().0)
        .unwrap()
        .sign(&claims("jane"), Duration::from_secs(3600))
        .unwrap();
    let (s, _) = get(&server.base, "/self", &[("userpolicy", &other)]).await;
    assert_eq!(s, 401);

    // USER_DN from loopback, looked up in USERS_FILE.
    let (s, me) = get(&server.base, "/self", &[("USER_DN", BOB_DN)]).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["label"], BOB_DN);
    let (s, out) = write(
        &server.base,
        &[("USER_DN", BOB_DN)],
        &json!([{"action": "C", "parentoid": "1/world", "name": BOB}]),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out[0]["userpolicy"]["label"], BOB_DN);

    // Killed, it stops answering.
    server.stop();
    let gone = reqwest::Client::new()
        .get(format!("{}/healthz", server.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(gone.is_err(), "the killed server still answers");

    // Restarted on the same data folder, what was written is still there.
    let port2 = free_port();
    let listen2 = format!("127.0.0.1:{port2}");
    let mut again = Server::start(
        tmp.path(),
        &["serve", "--listen", &listen2, "--data-dir", &data_s],
        &envs,
        port2,
    );
    again.wait_healthy().await;
    let (s, p) = get(
        &again.base,
        &format!("/props/1/world/{JANE}"),
        &[("userpolicy", &jane)],
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["name"], JANE);
}

#[tokio::test]
async fn flags_override_environment_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, jwt_pub) = es512_keys();
    let port = free_port();
    let data_flag = tmp.path().join("from-flag").display().to_string();
    let data_env = tmp.path().join("from-env").display().to_string();
    let listen_flag = format!("127.0.0.1:{port}");
    let listen_env = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(
        tmp.path(),
        &["serve", "--listen", &listen_flag, "--data-dir", &data_flag],
        &[
            ("JWT_PUB", jwt_pub.as_str()),
            ("LISTEN", listen_env.as_str()),
            ("DATA_DIR", data_env.as_str()),
        ],
        port,
    );
    server.wait_healthy().await;
    assert!(store_in(Path::new(&data_flag)).exists());
    assert!(!store_in(Path::new(&data_env)).exists());
}

#[tokio::test]
async fn vellum_token_mints_a_token_that_a_dev_key_server_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.display().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // No JWT_PUB, no JWT_SECRET: the server makes its development key in the data folder.
    let mut server = Server::start(
        tmp.path(),
        &["serve", "--listen", &listen, "--data-dir", &data_s],
        &[],
        port,
    );
    server.wait_healthy().await;
    assert!(
        data.join(vellum::identity::DEV_KEY_FILE).exists(),
        "the dev key is kept in the data folder"
    );
    assert!(
        server
            .log_text()
            .to_ascii_lowercase()
            .contains("development"),
        "SPEC §1: the dev key is announced loudly:\n{}",
        server.log_text()
    );

    let jane_claims = manifest("fixtures/claims/jane.json").display().to_string();
    let mut cmd = vellum(tmp.path());
    cmd.args([
        "token",
        "--claims",
        &jane_claims,
        "--ttl",
        "10m",
        "--data-dir",
        &data_s,
    ]);
    let out = run(cmd, 60);
    assert!(
        out.status.success(),
        "vellum token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "one JWT on stdout: {token:?}");
    let payload = jwt_payload(&token);
    assert_eq!(payload["label"], "asjane");
    let ttl = payload["exp"].as_u64().unwrap() as i64 - now_secs() as i64;
    assert!((590..=610).contains(&ttl), "--ttl 10m: exp is {ttl}s away");

    let (s, me) = get(&server.base, "/self", &[("userpolicy", &token)]).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["label"], "asjane");
    let (s, out) = write(
        &server.base,
        &[("userpolicy", &token)],
        &json!([{"action": "C", "parentoid": "1/world", "name": JANE}]),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out[0]["jwthash"], sha256_hex(&token));
}

#[tokio::test]
async fn vellum_with_no_subcommand_serves_with_the_embedded_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // No --data-dir: ./vellum-data in the working directory.
    let mut server = Server::start(tmp.path(), &["--listen", &listen], &[], port);
    server.wait_healthy().await;
    let (s, root) = get(&server.base, "/props/1", &[]).await;
    assert_eq!(s, 200, "{root}");
    assert_eq!(root["oid"], "0000000000000001");
    let default_dir = tmp.path().join("vellum-data");
    assert!(
        store_in(&default_dir).exists(),
        "SPEC §1: ./vellum-data/vellum.db"
    );
    assert!(default_dir.join(vellum::identity::DEV_KEY_FILE).exists());
    // `vellum token` finds the same default folder.
    let jane_claims = manifest("fixtures/claims/jane.json").display().to_string();
    let mut cmd = vellum(tmp.path());
    cmd.args(["token", "--claims", &jane_claims]);
    let out = run(cmd, 60);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (s, me) = get(&server.base, "/self", &[("userpolicy", &token)]).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["label"], "asjane");
    let ttl = jwt_payload(&token)["exp"].as_u64().unwrap() as i64 - now_secs() as i64;
    assert!(
        (3590..=3610).contains(&ttl),
        "the default --ttl is 1h: {ttl}s"
    );
}

#[tokio::test]
async fn user_dn_identities_come_from_fixtures_users_json_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data_s = tmp.path().join("data").display().to_string();
    let stray = manifest("vellum-data");
    let stray_before = stray.exists();
    // Started from the source tree, where fixtures/users.json is present; no USERS_FILE.
    let mut server = Server::start_logging_to(
        &manifest(""),
        tmp.path(),
        &["serve", "--listen", &listen, "--data-dir", &data_s],
        &[],
        port,
    );
    server.wait_healthy().await;
    let (s, me) = get(&server.base, "/self", &[("USER_DN", JANE_DN)]).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["label"], JANE_DN);
    assert_eq!(me["values"]["email"], json!([JANE]));
    assert_eq!(
        stray.exists(),
        stray_before,
        "--data-dir was given: nothing in ./vellum-data"
    );
}

#[test]
fn help_lists_serve_and_token() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = vellum(tmp.path());
    cmd.arg("--help");
    let out = run(cmd, 30);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve"), "{text}");
    assert!(text.contains("token"), "{text}");

    let mut cmd = vellum(tmp.path());
    cmd.args(["serve", "--help"]);
    let out = run(cmd, 30);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--data-dir", "--jwt-pub", "--client-prefix"] {
        assert!(text.contains(flag), "serve --help lacks {flag}: {text}");
    }
}

#[test]
fn bad_flags_and_arguments_exit_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.json").display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--no-such-flag"],
        vec!["serve", "--no-such-flag"],
        vec!["serve", "--listen", "not-an-address"],
        vec!["serve", "--synchronous", "sometimes"],
        vec!["frobnicate"],
        vec!["token"],
        vec!["token", "--claims", &missing],
        vec!["token", "--claims", "x", "--ttl", "forever"],
    ];
    for args in cases {
        let mut cmd = vellum(tmp.path());
        cmd.args(&args);
        let out = run(cmd, 30);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!out.stderr.is_empty(), "{args:?}: no explanation on stderr");
    }
    assert!(
        !tmp.path().join("vellum-data").exists(),
        "a refused command line must not create the default data folder"
    );
}

// ---------------------------------------------------------------------------------------
// The operator's commands: gc, fsck, rekey (SPEC §1, §7)
// ---------------------------------------------------------------------------------------

async fn content(base: &str, token: &str, oid: &str) -> (u16, Option<Vec<u8>>) {
    let resp = reqwest::Client::new()
        .get(format!("{base}/stream/{oid}"))
        .header("userpolicy", token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.ok().map(|b| b.to_vec()))
}

/// What shows that a data folder holds the store: its SQLite file, or (when the suite runs
/// on PostgreSQL, tests/it_postgres.rs) the local blob folder the server made there.
fn store_in(data: &Path) -> std::path::PathBuf {
    if crate::common::postgres::suite_on_postgres() {
        data.join("blobs")
    } else {
        data.join("vellum.db")
    }
}

fn rname(e: &Value) -> String {
    e["rname"]["S3"].as_str().unwrap().to_string()
}

fn key_ids(data: &Path) -> Vec<String> {
    let store = crate::common::open_store(data);
    let rows = crate::common::off_runtime(|| {
        store
            .read_blocking(|s| s.blobs_after(None, 100_000))
            .unwrap()
    });
    rows.into_iter()
        .filter_map(|r| r.wrapped.map(|w| w.key_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_fsck_and_rekey_do_what_they_say_on_the_stored_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.display().to_string();
    let (private_pem, jwt_pub) = es512_keys();
    let token = TokenSigner::from_pem(&private_pem)
        .unwrap()
        .sign(&claims("root"), Duration::from_secs(3600))
        .unwrap();
    let (k1, k2) = (masterkey(), masterkey());
    let old_keys = format!("k1:{k1}");
    let both_keys = format!("k2:{k2},k1:{k1}");
    let new_keys = format!("k2:{k2}");
    let serve = |keys: &str| -> Server {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        Server::start(
            tmp.path(),
            &["serve", "--listen", &listen, "--data-dir", &data_s],
            &[
                ("JWT_PUB", jwt_pub.as_str()),
                ("MASTERKEYS", keys),
                ("INLINE_MAX_BYTES", "1000"),
            ],
            port,
        )
    };
    let op = |args: &[&str], keys: &str| -> Output {
        let mut c = vellum(tmp.path());
        c.args(args).args(["--data-dir", &data_s]);
        c.env("MASTERKEYS", keys);
        run(c, 120)
    };

    // Two files under k1: one in the blob store, one kept inline.
    let big_bytes = Rng(7).bytes(300_000);
    let small_bytes = b"small and inline".to_vec();
    let mut s1 = serve(&old_keys);
    s1.wait_healthy().await;
    let big = upload_file(&s1.base, &token, "big.bin", big_bytes.clone()).await;
    let small = upload_file(&s1.base, &token, "small.txt", small_bytes.clone()).await;
    assert_eq!(
        big["encrypteddata"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["k1"]
    );
    s1.stop();
    let big_file = data.join("blobs").join(rname(&big));
    assert!(
        big_file.is_file(),
        "the big file is an object in the blob store"
    );
    assert!(
        !data.join("blobs").join(rname(&small)).exists(),
        "the small file is inline, not an object"
    );

    // gc: an old orphan goes; a young orphan, a foreign file and referenced blobs stay.
    let old_orphan = data.join("blobs/abc/0123456789abcabc");
    let young_orphan = data.join("blobs/def/0123456789abcdef");
    let foreign = data.join("blobs/notes.txt");
    for f in [&old_orphan, &young_orphan, &foreign] {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"left behind by a crash").unwrap();
    }
    let touched = Command::new("touch")
        .args(["-d", "3 hours ago"])
        .arg(&old_orphan)
        .status()
        .unwrap();
    assert!(touched.success());
    let out = op(&["gc"], &old_keys);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gc failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("removed abc/0123456789abcabc"), "{text}");
    assert!(text.contains("1 orphaned removed"), "{text}");
    assert!(!old_orphan.exists());
    assert!(young_orphan.exists() && foreign.exists() && big_file.exists());

    // rekey under k2 while a server with both keys runs: reads work before and after, the
    // blob object is untouched, every wrapped key moves to k2.
    let before = std::fs::read(&big_file).unwrap();
    let mut s2 = serve(&both_keys);
    s2.wait_healthy().await;
    let big_oid = big["oid"].as_str().unwrap();
    let small_oid = small["oid"].as_str().unwrap();
    assert_eq!(
        content(&s2.base, &token, big_oid).await,
        (200, Some(big_bytes.clone()))
    );
    let out = op(&["rekey"], &both_keys);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rekey failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("2 data keys re-wrapped under \"k2\""),
        "{text}"
    );
    assert_eq!(key_ids(&data), ["k2", "k2"]);
    assert_eq!(
        std::fs::read(&big_file).unwrap(),
        before,
        "rekey rewrote a blob"
    );
    assert_eq!(
        content(&s2.base, &token, big_oid).await,
        (200, Some(big_bytes.clone()))
    );
    assert_eq!(
        content(&s2.base, &token, small_oid).await,
        (200, Some(small_bytes.clone()))
    );
    let (_, props) = get(
        &s2.base,
        &format!("/props/{big_oid}"),
        &[("userpolicy", &token)],
    )
    .await;
    assert!(props["encrypteddata"]["k2"].is_string(), "{props}");
    s2.stop();
    // A second rekey has nothing to do.
    let out = op(&["rekey"], &both_keys);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 data keys re-wrapped"));

    // With k1 gone, everything still reads.
    let mut s3 = serve(&new_keys);
    s3.wait_healthy().await;
    assert_eq!(
        content(&s3.base, &token, big_oid).await,
        (200, Some(big_bytes.clone()))
    );
    assert_eq!(
        content(&s3.base, &token, small_oid).await,
        (200, Some(small_bytes.clone()))
    );

    // fsck: clean, then a flipped byte in the stored object is reported and exits 1.
    let out = op(&["fsck"], &new_keys);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fsck failed on a clean store: {text}");
    assert!(
        text.contains("2 blobs (300016 bytes) checked, 0 problems"),
        "{text}"
    );
    let mut damaged = before.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x01;
    std::fs::write(&big_file, &damaged).unwrap();
    let out = op(&["fsck"], &new_keys);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("DAMAGED {}", rname(&big))), "{text}");
    assert!(text.contains("1 problems"), "{text}");
    // ... and the server never serves it as good content.
    let (status, body) = content(&s3.base, &token, big_oid).await;
    assert!(
        status >= 500 || body.is_none(),
        "a damaged blob must be a 5xx or an aborted transfer, got {status} with a whole body"
    );
}

#[tokio::test]
async fn json_logs_carry_an_audit_line_for_allowed_and_denied_actions_and_no_token() {
    let tmp = tempfile::tempdir().unwrap();
    let data_s = tmp.path().join("data").display().to_string();
    let (pem, jwt_pub) = es512_keys();
    let signer = TokenSigner::from_pem(&pem).unwrap();
    let jane = signer
        .sign(&claims("jane"), Duration::from_secs(600))
        .unwrap();
    let bob = signer
        .sign(&claims("bob"), Duration::from_secs(600))
        .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Server::start(
        tmp.path(),
        &["serve", "--listen", &listen, "--data-dir", &data_s],
        &[("JWT_PUB", jwt_pub.as_str()), ("LOG_FORMAT", "json")],
        port,
    );
    server.wait_healthy().await;
    let (status, out) = write(
        &server.base,
        &[("userpolicy", jane.as_str())],
        &json!([{"action": "C", "parentoid": "1/world", "name": "jane.doe@deciphernow.com"}]),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let oid = out[0]["oid"].as_str().unwrap().to_string();
    let (s, _) = get(
        &server.base,
        &format!("/props/{oid}"),
        &[("userpolicy", &jane)],
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = get(
        &server.base,
        &format!("/props/{oid}"),
        &[("userpolicy", &bob)],
    )
    .await;
    assert_eq!(s, 404);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log_text();
    let audit: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect();
    let find = |msg: &str, user: &str, pred: &dyn Fn(&Value) -> bool| {
        audit.iter().any(|v| {
            v["fields"]["message"] == msg && v["fields"]["user"] == user && pred(&v["fields"])
        })
    };
    assert!(
        find("allowed", "asjane", &|f| f["action"] == "C"
            && f["oid"] == oid.as_str()),
        "no audit line for jane's create:\n{log}"
    );
    assert!(
        find("allowed", "asjane", &|f| f["route"] == "props"
            && f["letter"] == "R"),
        "no audit line for jane's read:\n{log}"
    );
    assert!(
        find("denied", "asBob", &|f| f["route"] == "props"
            && f["object"] == oid.as_str()),
        "no audit line for bob's denied read:\n{log}"
    );
    assert!(
        !log.contains(&jane) && !log.contains(&bob),
        "a token reached the log"
    );
}

/// The runtime stage of the Dockerfile: its instructions with continuation lines joined.
struct ImageRuntime {
    env: Vec<(String, String)>,
    user: String,
    volume: Vec<String>,
    expose: String,
    /// ENTRYPOINT followed by CMD (exec form).
    argv: Vec<String>,
    healthcheck: String,
}

fn image_runtime() -> ImageRuntime {
    let text = std::fs::read_to_string(manifest("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let stage = joined
        .rsplit_once("\nFROM ")
        .expect("a multi-stage build")
        .1;
    let mut image = ImageRuntime {
        env: Vec::new(),
        user: String::new(),
        volume: Vec::new(),
        expose: String::new(),
        argv: Vec::new(),
        healthcheck: String::new(),
    };
    let json_array = |s: &str| -> Vec<String> { serde_json::from_str(s.trim()).unwrap() };
    for line in stage.lines().map(str::trim) {
        let Some((instruction, rest)) = line.split_once(' ') else {
            continue;
        };
        match instruction {
            "ENV" => image.env.extend(rest.split_whitespace().map(|kv| {
                let (k, v) = kv.split_once('=').expect("ENV key=value");
                (k.to_string(), v.to_string())
            })),
            "USER" => image.user = rest.trim().to_string(),
            "VOLUME" => image.volume = json_array(rest),
            "EXPOSE" => image.expose = rest.trim().to_string(),
            "ENTRYPOINT" => {
                image.argv.splice(0..0, json_array(rest));
            }
            "CMD" => image.argv.extend(json_array(rest)),
            "HEALTHCHECK" => {
                image.healthcheck = rest
                    .split_once(" CMD ")
                    .expect("HEALTHCHECK CMD")
                    .1
                    .to_string()
            }
            _ => {}
        }
    }
    image
}

/// The Dockerfile's runtime settings, run outside a container (no Docker engine here;
/// `.ci/run` lints the file and compiles its build context): the image's ENTRYPOINT and CMD
/// with its ENV (port and data folder moved to free ones) serve as the non-root user's
/// data volume expects, the JWT_PUB/MASTERKEY of its usage comment are honoured, and its
/// HEALTHCHECK command passes against that server and fails once it is gone.
#[tokio::test]
async fn the_docker_image_command_serves_and_its_healthcheck_tells_up_from_down() {
    let image = image_runtime();
    let env = |k: &str| -> String {
        let v = image.env.iter().find(|(key, _)| key == k);
        v.unwrap_or_else(|| panic!("Dockerfile: no ENV {k}"))
            .1
            .clone()
    };
    assert_eq!(image.user, "10001:10001", "a non-root user");
    assert_eq!(
        image.volume,
        [env("DATA_DIR")],
        "the data folder is the volume"
    );
    let (host, port) = env("LISTEN")
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    assert_eq!(image.expose, port, "EXPOSE is LISTEN's port");
    assert_eq!(host, "0.0.0.0", "reachable from outside the container");
    assert_eq!(image.argv.first().map(String::as_str), Some("vellum"));

    let Some(curl) = external::find_program("curl") else {
        external::skip_or_fail(
            "the Dockerfile's HEALTHCHECK needs curl (Debian: apt-get install curl)",
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("{host}:{port}");
    let data = tmp.path().join("data");
    let (pem, jwt_pub) = es512_keys();
    let mk = masterkey();
    let data_s = data.display().to_string();
    let envs = [
        ("LISTEN", listen.as_str()),
        ("DATA_DIR", data_s.as_str()),
        ("JWT_PUB", jwt_pub.as_str()),
        ("MASTERKEY", mk.as_str()),
    ];
    let args: Vec<&str> = image.argv[1..].iter().map(String::as_str).collect();
    let mut server = Server::start(tmp.path(), &args, &envs, port);
    server.wait_healthy().await;
    assert!(store_in(&data).exists(), "DATA_DIR holds the store");
    let jane = TokenSigner::from_pem(&pem)
        .unwrap()
        .sign(&claims("jane"), Duration::from_secs(600))
        .unwrap();
    let (s, me) = get(&server.base, "/self", &[("userpolicy", &jane)]).await;
    assert_eq!(s, 200, "a token for the JWT_PUB given: {me}");

    let healthcheck = || {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(&image.healthcheck)
            .env("LISTEN", &listen)
            .env("PATH", curl.parent().unwrap());
        run(sh, 30)
    };
    let up = healthcheck();
    assert!(
        up.status.success(),
        "HEALTHCHECK against a running server: {:?} {}",
        up.status,
        String::from_utf8_lossy(&up.stderr)
    );
    server.stop();
    let down = healthcheck();
    assert!(
        !down.status.success(),
        "HEALTHCHECK passed with the server gone"
    );
}
