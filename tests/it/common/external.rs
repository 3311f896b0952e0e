//! Outside programs some tests drive (nginx, openssl, curl, chromium). Without one, a test
//! prints a loud SKIPPED and passes, unless `VELLUM_REQUIRE_EXTERNAL=1` (`.ci/run` sets it),
//! where it fails.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;

/// `name` on PATH or in the sbin folders (nginx lives in /usr/sbin, often not on a user's PATH).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Says loudly that a test is skipped for want of `msg`'s programs; panics instead when
/// `VELLUM_REQUIRE_EXTERNAL=1`.
pub fn skip_or_fail(msg: &str) {
    if std::env::var("VELLUM_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1") {
        panic!("{msg}; VELLUM_REQUIRE_EXTERNAL=1 makes that a failure");
    }
    // Straight to stderr: the test harness captures eprintln! of a passing test.
    let bar = "=".repeat(78);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n{bar}\nSKIPPED: {msg}.\nSet VELLUM_REQUIRE_EXTERNAL=1 to make this a failure.\n{bar}"
    );
}

/// A loopback port free right now, for a server run as a child process (which must be
/// told its port before it starts; another process could take it in between, rarely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
