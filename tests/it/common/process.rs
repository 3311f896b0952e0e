//! The real `vellum` binary as a child process: a clean configuration environment, a
//! server killed (and reaped) when dropped with its log printed if the test fails, and
//! commands that must finish by themselves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every variable SPEC §1 (and README) names, so the caller's environment cannot leak in.
pub const CONFIG_VARS: &[&str] = &[
    "LISTEN",
    "DATA_DIR",
    "MASTERKEY",
    "MASTERKEYS",
    "JWT_PUB",
    "JWT_SECRET",
    "JWT_PRIV",
    "JWT_ALGORITHMS",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "USERS_FILE",
    "TRUSTED_PROXIES",
    "GMDATA_NAMESPACE",
    "GMDATA_NAMESPACE_USERFIELD",
    "USES3",
    "FILE_BUCKET",
    "FILE_PARTITION",
    "SYNCHRONOUS",
    "DATABASE_URL",
    "DATABASE_POOL",
    "CLIENT_PREFIX",
    "LOG_FORMAT",
    "MAX_EVENTS_PER_WRITE",
    "MAX_METADATA_BYTES",
    "MAX_POLICY_BYTES",
    "POLICY_TIMEOUT",
    "INLINE_MAX_BYTES",
    "MAX_FILE_BYTES",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ENDPOINT",
    "TASK_WORKERS",
    "TASK_LEASE",
    "TASK_MAX_ATTEMPTS",
    "TASK_BACKOFF",
    "TASK_BACKOFF_MAX",
    "SHARE_SWEEP_INTERVAL",
    "SHARE_WEBHOOK_URL",
    "SHARE_WEBHOOK_SECRET",
    "SHARE_WEBHOOK_TIMEOUT",
];

pub fn vellum(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vellum"));
    for v in CONFIG_VARS {
        c.env_remove(v);
    }
    c.current_dir(cwd);
    c
}

/// A running `vellum` process; killed (and reaped) when dropped. Its output goes to log
/// files, printed if the test is failing.
pub struct Server {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl Server {
    pub fn start(cwd: &Path, args: &[&str], envs: &[(&str, &str)], port: u16) -> Server {
        Self::start_logging_to(cwd, cwd, args, envs, port)
    }

    pub fn start_logging_to(
        cwd: &Path,
        log_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        port: u16,
    ) -> Server {
        let log = log_dir.join(format!("vellum-{port}.log"));
        // Appended: a server restarted on the same port keeps one log.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = vellum(cwd);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        super::postgres::with_database(&mut cmd);
        let child = cmd.spawn().expect("start vellum");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until GET /healthz answers 200; fails if the process exits first.
    pub async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("vellum exited early with {status}:\n{}", self.log_text());
            }
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "vellum never became healthy:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(200)..].join("\n");
            eprintln!(
                "---- vellum log ({}), last lines ----\n{tail}",
                self.log.display()
            );
        }
    }
}

/// Runs a command that must finish by itself; kills it after `secs`.
pub fn run(mut cmd: Command, secs: u64) -> Output {
    super::postgres::with_database(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "command did not finish in {secs}s: stdout {} stderr {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
