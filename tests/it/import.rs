//! `vellum import` (SPEC §8) end to end: the real binary, run as a child process with a
//! clean environment, imports generated trees into a real server (in-process, on an
//! ephemeral port) over HTTP; everything is read back by path and compared byte for byte,
//! and the store's event log is counted to prove that re-runs and resumed runs write
//! nothing twice.

use crate::common;
use crate::common::rng;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{spawn_app, TestApp};
use futures_util::StreamExt;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rng::Rng;
use serde_json::Value;

const JANE: &str = "jane.doe@deciphernow.com";
const JANE_DN: &str = "CN=jane.doe,OU=People,O=Decipher Technology Studios,C=US";

/// `vellum import` with nothing inherited from the caller's environment that it reads.
fn import_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vellum"));
    for v in [
        "VELLUM_URL",
        "VELLUM_TOKEN",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "RUST_LOG",
    ] {
        c.env_remove(v);
    }
    c.arg("import").args(args);
    c.stdin(Stdio::null());
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `vellum import` to completion (off the async runtime, which serves the app).
async fn import(args: &[&str]) -> Run {
    let mut cmd = import_cmd(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out: Output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Imports `local` into `remote` as jane; more flags after.
async fn import_as_jane(app: &TestApp, local: &Path, remote: &str, extra: &[&str]) -> Run {
    let token = app.token_for("jane");
    let local = local.display().to_string();
    let mut args = vec![
        local.as_str(),
        remote,
        "--url",
        app.base.as_str(),
        "--token",
        token.as_str(),
    ];
    args.extend_from_slice(extra);
    import(&args).await
}

fn home() -> String {
    format!("1/world/{JANE}")
}

/// A generated tree: its files (relative paths as names) and its folders.
struct Tree {
    root: PathBuf,
    files: Vec<Vec<String>>,
    dirs: BTreeSet<Vec<String>>,
}

impl Tree {
    fn local(&self, names: &[String]) -> PathBuf {
        names.iter().fold(self.root.clone(), |p, n| p.join(n))
    }
}

fn split(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `n` files spread over `folders` (relative paths), sizes from `size`.
fn gen_tree(
    root: &Path,
    folders: &[&str],
    n: usize,
    seed: u64,
    mut size: impl FnMut(usize, &mut Rng) -> usize,
    mut name: impl FnMut(usize) -> String,
) -> Tree {
    let mut rng = Rng(seed);
    let mut dirs = BTreeSet::new();
    for f in folders {
        let parts = split(f);
        for k in 1..=parts.len() {
            dirs.insert(parts[..k].to_vec());
        }
        std::fs::create_dir_all(root.join(f)).unwrap();
    }
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let mut p = split(folders[i % folders.len()]);
        p.push(name(i));
        let len = size(i, &mut rng);
        let data = rng.bytes(len);
        let path = p.iter().fold(root.to_path_buf(), |a, s| a.join(s));
        std::fs::write(path, data).unwrap();
        files.push(p);
    }
    Tree {
        root: root.to_path_buf(),
        files,
        dirs,
    }
}

/// The tree of the main test: 1,000 files in nested folders, mostly small (some past the
/// server's 64 KiB inline limit, three of a few MiB), names with spaces, punctuation and
/// non-ASCII letters, a deep path, an empty folder and an empty file.
fn main_tree(root: &Path) -> Tree {
    let folders = [
        "",
        "photos",
        "photos/2023",
        "photos/2024 summer",
        "docs",
        "docs/reports",
        "docs/reports/Q1 #1",
        "Ünïcødé café",
        "Ünïcødé café/naïve",
        "a b c",
        "deep/l1/l2/l3/l4/l5/l6/l7/l8/l9/l10/l11/l12/l13/l14/l15",
        "misc",
        "misc/日本語のフォルダ",
        "misc/100% (sure)?",
        "x",
        "x/y",
        "x/y/z",
        "music/jazz",
        "music/rock",
        "last",
    ];
    let big = [137usize, 480, 911];
    let mut t = gen_tree(
        root,
        &folders,
        1000,
        0x5eed_1234_abcd_0001,
        |i, rng| {
            if let Some(k) = big.iter().position(|&b| b == i) {
                return (3 << 20) + k * (1 << 20) + 12_345;
            }
            if i == 3 {
                return 0;
            }
            match rng.next() % 100 {
                0..=79 => (rng.next() % 4096) as usize,
                80..=96 => 4096 + (rng.next() % 60_000) as usize,
                _ => 60_000 + (rng.next() % 140_000) as usize,
            }
        },
        |i| match i % 9 {
            0 => format!("Ünïcødé café {i}.txt"),
            1 => format!("file {i:04}.txt"),
            2 => format!("rapport été #{i} (final).md"),
            3 => format!("100% done? {i}"),
            4 => format!("日本語 {i}.bin"),
            5 => format!(".hidden-{i}"),
            6 => format!("plus+and&amp {i}.dat"),
            _ => format!("f{i}"),
        },
    );
    std::fs::create_dir_all(root.join("empty/folder")).unwrap();
    t.dirs.insert(split("empty"));
    t.dirs.insert(split("empty/folder"));
    t
}

fn encode_path(names: &[String]) -> String {
    names
        .iter()
        .map(|n| utf8_percent_encode(n, NON_ALPHANUMERIC).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads every file of `t` under `remote` (a path) with GET /stream and compares bytes.
async fn assert_all_read_back(app: &TestApp, token: &str, remote: &str, t: &Tree, every: usize) {
    let remote = remote
        .split('/')
        .map(|n| utf8_percent_encode(n, NON_ALPHANUMERIC).to_string())
        .collect::<Vec<_>>()
        .join("/");
    let checks = t.files.iter().step_by(every).map(|f| {
        let url = format!("{}/stream/{remote}/{}", app.base, encode_path(f));
        let local = t.local(f);
        let client = app.client.clone();
        let token = token.to_string();
        async move {
            let r = client
                .get(&url)
                .header("userpolicy", token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap();
            (f.join("/"), status, body, local)
        }
    });
    let mut results = futures_util::stream::iter(checks).buffer_unordered(8);
    let mut n = 0;
    while let Some((name, status, body, local)) = results.next().await {
        assert_eq!(status, 200, "GET /stream of {name}");
        let want = std::fs::read(&local).unwrap();
        assert!(
            body.as_ref() == want.as_slice(),
            "{name}: {} bytes read back, {} on disk",
            body.len(),
            want.len()
        );
        n += 1;
    }
    assert_eq!(n, t.files.len().div_ceil(every));
}

/// Lists a remote folder (by path) and returns its children's names, failing on
/// duplicates.
async fn names_in(app: &TestApp, token: &str, path: &[String]) -> BTreeSet<String> {
    let url = format!("/list/{}", encode_path(path));
    let (status, v) = app.get_json(&url, Some(token)).await;
    assert_eq!(status, 200, "GET {url}: {v}");
    let mut out = BTreeSet::new();
    for e in v.as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        assert!(out.insert(name.clone()), "{name} twice in {url}");
    }
    out
}

/// Every remote folder of the tree holds exactly the local entries, once each.
async fn assert_same_shape(app: &TestApp, token: &str, remote: &str, t: &Tree) {
    let base = split(remote);
    let mut folders: Vec<Vec<String>> = vec![vec![]];
    folders.extend(t.dirs.iter().cloned());
    for d in folders {
        let mut want = BTreeSet::new();
        for e in std::fs::read_dir(t.local(&d)).unwrap() {
            want.insert(e.unwrap().file_name().into_string().unwrap());
        }
        let mut p = base.clone();
        p.extend(d.iter().cloned());
        assert_eq!(names_in(app, token, &p).await, want, "folder {d:?}");
    }
}

fn count_line(r: &Run) -> &str {
    r.stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("import: "))
        .unwrap_or_else(|| panic!("no summary line:\n{r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_imports_reads_back_reruns_as_a_no_op_and_updates_changed_files() {
    let app = spawn_app().await;
    let token = app.token_for("jane");
    let dir = tempfile::tempdir().unwrap();
    let t = main_tree(&dir.path().join("tree"));
    let remote = format!("{}/imported", home());
    let before = app.event_count();

    let started = Instant::now();
    let r = import_as_jane(&app, &t.root, &remote, &[]).await;
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{r}");
    assert!(
        count_line(&r).starts_with(
            "import: 1000 imported (1000 new, 0 updated), 0 already present, 0 failed"
        ),
        "{r}"
    );
    // Her home and `imported` (made from the path), the tree's folders, the files: once.
    let folders = 2 + t.dirs.len() as i64;
    assert_eq!(app.event_count() - before, folders + 1000, "{r}");
    assert!(
        count_line(&r).contains(&format!("{folders} folders created")),
        "{r}"
    );
    // Not a terminal: plain lines, no bar escape codes.
    assert!(!r.stderr.contains('\u{1b}'), "{r}");
    eprintln!("imported 1,000 files in {took:?}");

    assert_all_read_back(&app, &token, &remote, &t, 1).await;
    assert_same_shape(&app, &token, &remote, &t).await;

    // Again: everything is already there, nothing is written.
    let count = app.event_count();
    let r = import_as_jane(&app, &t.root, &remote, &[]).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        count_line(&r)
            .starts_with("import: 0 imported (0 new, 0 updated), 1000 already present, 0 failed"),
        "{r}"
    );
    assert!(count_line(&r).contains(" 0 folders created"), "{r}");
    assert_eq!(app.event_count(), count, "a re-run wrote events");

    // Change two files (same size; other size), add one: exactly three new versions.
    let same_size = t.local(&t.files[10]);
    let mut data = std::fs::read(&same_size).unwrap();
    assert!(!data.is_empty());
    data[0] ^= 0xff;
    std::fs::write(&same_size, &data).unwrap();
    let other_size = t.local(&t.files[480]); // one of the large files
    std::fs::write(&other_size, b"now it is short").unwrap();
    std::fs::write(t.root.join("photos/new one.txt"), b"brand new").unwrap();
    let r = import_as_jane(&app, &t.root, &remote, &["--jobs", "2"]).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        count_line(&r)
            .starts_with("import: 3 imported (1 new, 2 updated), 998 already present, 0 failed"),
        "{r}"
    );
    assert_eq!(app.event_count(), count + 3);
    for (local, names) in [
        (same_size, t.files[10].clone()),
        (other_size, t.files[480].clone()),
        (
            t.root.join("photos/new one.txt"),
            split("photos/new one.txt"),
        ),
    ] {
        let url = format!("/stream/{remote}/{}", encode_path(&names));
        let body = app.get(&url, Some(&token)).await.bytes().await.unwrap();
        assert_eq!(
            body.as_ref(),
            std::fs::read(local).unwrap().as_slice(),
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_to_completion_without_duplicates() {
    let app = spawn_app().await;
    let token = app.token_for("jane");
    let dir = tempfile::tempdir().unwrap();
    let folders: Vec<String> = (0..12).map(|i| format!("batch {i:02}/inner")).collect();
    let folder_refs: Vec<&str> = folders.iter().map(String::as_str).collect();
    let t = gen_tree(
        &dir.path().join("tree"),
        &folder_refs,
        1200,
        0xfeed_0000_0000_0002,
        |_, rng| 100 + (rng.next() % 2000) as usize,
        |i| format!("part {i:04}.bin"),
    );
    let remote = format!("{}/resumed", home());
    let before = app.event_count();
    let total = 2 + t.dirs.len() as i64 + 1200;

    // Small sequential transactions, so that the run is killed part-way.
    let root = t.root.display().to_string();
    let mut cmd = import_cmd(&[
        &root,
        &remote,
        "--url",
        &app.base,
        "--token",
        &token,
        "--batch-events",
        "20",
        "--jobs",
        "1",
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let n = app.event_count() - before;
        if n >= 150 {
            child.kill().unwrap();
            break n;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "import ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "import made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success());
    let after_kill = app.event_count() - before;
    assert!(
        after_kill < total,
        "the import finished before it was killed ({at_kill} events at kill)"
    );

    let r = import_as_jane(&app, &t.root, &remote, &[]).await;
    assert_eq!(r.code, 0, "{r}");
    let line = count_line(&r);
    assert!(line.contains(" 0 failed"), "{r}");
    eprintln!("killed after {after_kill} of {total} events; resumed: {line}");
    // Every folder and file exactly once: no duplicate creates, no needless updates.
    assert_eq!(app.event_count() - before, total, "{r}");
    assert!(line.contains(", 0 updated)"), "{r}");
    assert_same_shape(&app, &token, &remote, &t).await;
    assert_all_read_back(&app, &token, &remote, &t, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_credential_errors_exit_2_with_a_clear_message() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
    let local = dir.path().display().to_string();
    let remote = format!("{}/x", home());
    let before = app.event_count();

    let r = import(&[&local, &remote, "--url", &app.base, "--token", "not-a-jwt"]).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("authentication failed"), "{r}");

    let missing = dir.path().join("nope").display().to_string();
    let token = app.token_for("jane");
    let r = import(&[&missing, &remote, "--url", &app.base, "--token", &token]).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("does not exist"), "{r}");

    let r = import(&[&local, "world/x", "--url", &app.base, "--token", &token]).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("REMOTE_PATH"), "{r}");

    let r = import(&[
        &local,
        &remote,
        "--url",
        &app.base,
        "--token",
        &token,
        "--security",
        "[1]",
    ])
    .await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("--security"), "{r}");

    // Nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let r = import(&[&local, &remote, "--url", &url, "--token", &token]).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("cannot reach the server"), "{r}");

    // A read-only identity cannot write at all.
    let ro = app.token_for("readonly");
    let r = import(&[&local, &remote, "--url", &app.base, "--token", &ro]).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("readonly"), "{r}");

    // A policy that does not parse: refused at the first create, nothing written.
    let policy = dir.path().join("bad.policy");
    std::fs::write(&policy, "(if (contains email").unwrap();
    let p = policy.display().to_string();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("b.txt"), b"b").unwrap();
    let r = import(&[
        &sub.display().to_string(),
        &home(),
        "--url",
        &app.base,
        "--token",
        &token,
        "--policy",
        &p,
    ])
    .await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("policy"), "{r}");
    assert_eq!(app.event_count(), before, "nothing may be written");

    let r = import(&["--help"]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit status"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_names_fail_symlinks_are_skipped_and_the_rest_arrives() {
    use std::os::unix::ffi::OsStrExt;
    let app = spawn_app().await;
    let token = app.token_for("jane");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("ok dir")).unwrap();
    std::fs::write(root.join("good.txt"), b"good").unwrap();
    std::fs::write(root.join("ok dir/inner.txt"), b"inner").unwrap();
    let bad_file = std::ffi::OsStr::from_bytes(b"bad \xff name.txt");
    std::fs::write(root.join(bad_file), b"bad").unwrap();
    let bad_dir = root.join(std::ffi::OsStr::from_bytes(b"bad \xfe dir"));
    std::fs::create_dir(&bad_dir).unwrap();
    std::fs::write(bad_dir.join("one"), b"1").unwrap();
    std::fs::write(bad_dir.join("two"), b"2").unwrap();
    std::os::unix::fs::symlink(root.join("good.txt"), root.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
    let remote = format!("{}/names", home());
    let before = app.event_count();

    let r = import_as_jane(&app, &root, &remote, &[]).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(
        count_line(&r)
            .starts_with("import: 2 imported (2 new, 0 updated), 0 already present, 3 failed"),
        "{r}"
    );
    assert!(
        r.stdout.contains("link.txt: symbolic link (not followed)"),
        "{r}"
    );
    assert!(
        r.stdout.contains("etc-link: symbolic link (not followed)"),
        "{r}"
    );
    assert!(r.stdout.contains("not valid UTF-8"), "{r}");
    // Home, `names`, `ok dir`, two files.
    assert_eq!(app.event_count() - before, 5);
    let names = names_in(&app, &token, &split(&remote)).await;
    assert_eq!(
        names,
        ["good.txt", "ok dir"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let body = app
        .get(
            &format!("/stream/{remote}/ok%20dir/inner.txt"),
            Some(&token),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(body, "inner");

    // Only the refused ones fail again; nothing is written twice.
    let r = import_as_jane(&app, &root, &remote, &[]).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(
        count_line(&r).contains("2 already present, 3 failed"),
        "{r}"
    );
    assert_eq!(app.event_count() - before, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_security_flags_apply_to_created_objects_with_a_user_dn() {
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let bob = app.token_for("bob");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/shared.txt"), b"for bob to read").unwrap();
    let policy_text = format!("(if (contains email \"{JANE}\") (yield-all) (yield R X))");
    let policy = dir.path().join("p.lisp");
    std::fs::write(&policy, format!("{policy_text}\n")).unwrap();
    let security = r##"{"label":"PUBLIC","foreground":"#FFFFFF","background":"#007A33"}"##;
    let remote = format!("{}/shared", home());

    let r = import(&[
        &root.display().to_string(),
        &remote,
        "--url",
        &app.base,
        "--user-dn",
        JANE_DN,
        "--policy",
        &policy.display().to_string(),
        "--security",
        security,
    ])
    .await;
    assert_eq!(r.code, 0, "{r}");
    let (status, props) = app
        .get_json(&format!("/props/{remote}/sub/shared.txt"), Some(&jane))
        .await;
    assert_eq!(status, 200, "{props}");
    assert_eq!(props["originalobjectpolicy"], Value::String(policy_text));
    let want: Value = serde_json::from_str(security).unwrap();
    assert_eq!(props["security"], want);
    assert_eq!(props["userpolicy"]["label"], JANE_DN);
    // Bob may read what the policy lets everyone read (by path: every folder yields X).
    let r = app
        .get(&format!("/stream/{remote}/sub/shared.txt"), Some(&bob))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "for bob to read");
    // The folders the import created carry it too.
    let (_, sub) = app
        .get_json(&format!("/props/{remote}/sub"), Some(&jane))
        .await;
    assert_eq!(sub["security"], want);
}
