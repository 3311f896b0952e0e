//! The proxy deployment of `examples/nginx-mtls/` on loopback: nginx terminates TLS, demands a
//! client certificate from the clients' CA and passes the certificate's subject DN to Vellum as
//! `USER_DN`; Vellum (trusting loopback, its default) looks the DN up in its users file.
//!
//! The test renders the example's own `nginx.conf.template`, makes a CA, a server certificate
//! and client certificates with the `openssl` CLI, runs nginx as a child process (killed by a
//! guard) and talks to it with the `curl` CLI (reqwest is built here without TLS). Vellum runs
//! in-process on an ephemeral port with a fresh data folder.
//!
//! nginx, openssl and curl are outside programs: without one of them every test here prints a
//! loud SKIPPED and passes, unless `VELLUM_REQUIRE_EXTERNAL=1` (`.ci/run` sets it), where it
//! fails.

use crate::common::external;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use external::{find_program, free_port, skip_or_fail};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// In the users file. Its O holds a comma: nginx writes `$ssl_client_s_dn` in RFC 2253 form,
/// most specific RDN first and the comma escaped, and the users file holds that exact string.
const ALICE_SUBJ: &str = "/C=US/O=Example, Inc./OU=People/CN=alice";
const ALICE_DN: &str = r"CN=alice,OU=People,O=Example\, Inc.,C=US";
/// In the users file too: RFC 2253 form writes each byte of a non-ASCII character as `\XX`.
const CAROL_SUBJ: &str = "/C=US/O=Example, Inc./OU=People/CN=Carol Dürr";
const CAROL_DN: &str = r"CN=Carol D\C3\BCrr,OU=People,O=Example\, Inc.,C=US";
/// Issued by the clients' CA, but not in the users file (`CN=bob,OU=People,…`).
const BOB_SUBJ: &str = "/C=US/O=Example, Inc./OU=People/CN=bob";

const TEMPLATE: &str = "examples/nginx-mtls/nginx.conf.template";

fn alice_values() -> Value {
    json!({"email": ["alice@example.com"], "org": ["example.com"], "citizenship": ["USA"]})
}

fn carol_values() -> Value {
    json!({"email": ["carol@example.com"], "org": ["example.com"]})
}

// ---------------------------------------------------------------------------------------
// Outside programs
// ---------------------------------------------------------------------------------------

struct Tools {
    nginx: PathBuf,
    openssl: PathBuf,
    curl: PathBuf,
}

/// The three programs, or `None` after a loud skip message; a panic instead when
/// `VELLUM_REQUIRE_EXTERNAL=1`.
fn tools(test: &str) -> Option<Tools> {
    let found = ["nginx", "openssl", "curl"].map(|n| (n, find_program(n)));
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "tests/proxy_mtls.rs ({test}) needs {} (Debian: apt-get install nginx openssl curl)",
            missing.join(", ")
        );
        skip_or_fail(&msg);
        return None;
    }
    let [nginx, openssl, curl] = found.map(|(_, p)| p.unwrap());
    Some(Tools {
        nginx,
        openssl,
        curl,
    })
}

/// Runs a command to completion; panics with its output if it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// Certificates (openssl CLI), all in one folder
// ---------------------------------------------------------------------------------------

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
";

struct Pki<'a> {
    dir: &'a Path,
    openssl: &'a Path,
}

impl Pki<'_> {
    /// `openssl` with `args` (split at spaces) and then `-subj subj` (which may hold spaces).
    fn openssl(&self, args: &str, subj: Option<&str>, what: &str) {
        let mut cmd = Command::new(self.openssl);
        cmd.args(args.split_whitespace()).current_dir(self.dir);
        if let Some(subj) = subj {
            cmd.args(["-utf8", "-subj", subj]);
        }
        run(&mut cmd, what);
    }

    /// A self-signed CA: `{name}.crt`, `{name}.key` (P-256).
    fn ca(&self, name: &str, subj: &str) {
        self.openssl(
            &format!(
                "req -config openssl.cnf -x509 -new -newkey ec -pkeyopt \
                 ec_paramgen_curve:prime256v1 -nodes -keyout {name}.key -out {name}.crt \
                 -days 2 -extensions ca"
            ),
            Some(subj),
            &format!("openssl: CA {name}"),
        );
    }

    /// `{name}.crt`/`{name}.key` issued by CA `ca`, with the `[ext]` extensions.
    fn leaf(&self, name: &str, subj: &str, ca: &str, ext: &str) {
        self.openssl(
            &format!(
                "req -config openssl.cnf -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
                 -nodes -keyout {name}.key -out {name}.csr"
            ),
            Some(subj),
            &format!("openssl: request for {name}"),
        );
        self.openssl(
            &format!(
                "x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -days 2 \
                 -out {name}.crt -extfile openssl.cnf -extensions {ext}"
            ),
            None,
            &format!("openssl: certificate for {name}"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// nginx, a child process
// ---------------------------------------------------------------------------------------

/// Kills nginx (a single process: `master_process off`) when the test ends, however it ends.
struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example's template with every `${NAME}` replaced; panics on a placeholder left over.
fn render(vars: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TEMPLATE);
    let mut text = fs::read_to_string(&path).unwrap();
    for (name, value) in vars {
        let placeholder = format!("${{{name}}}");
        assert!(
            text.contains(&placeholder),
            "{TEMPLATE} has no {placeholder}"
        );
        text = text.replace(&placeholder, value);
    }
    if let Some(i) = text.find("${") {
        let rest: String = text[i..].chars().take(40).collect();
        panic!("{TEMPLATE}: a placeholder the test does not fill: {rest}");
    }
    text
}

/// Renders the template into `dir` and starts nginx on a free loopback port, as the current
/// user, in the foreground. Retries on a port taken between the probe and nginx's bind.
fn start_nginx(nginx: &Path, dir: &Path, upstream: SocketAddr) -> Nginx {
    let (run_dir, log_dir) = (dir.join("run"), dir.join("log"));
    fs::create_dir_all(&run_dir).unwrap();
    fs::create_dir_all(&log_dir).unwrap();
    let error_log = log_dir.join("error.log");
    let conf = dir.join("nginx.conf");
    for _attempt in 0..5 {
        let port = free_port();
        let text = render(&[
            ("NGINX_LISTEN", format!("127.0.0.1:{port}")),
            ("SERVER_NAME", "localhost".into()),
            ("TLS_CERT", dir.join("server.crt").display().to_string()),
            ("TLS_KEY", dir.join("server.key").display().to_string()),
            (
                "CLIENT_CA",
                dir.join("clients-ca.crt").display().to_string(),
            ),
            ("VELLUM_UPSTREAM", upstream.to_string()),
            ("NGINX_RUN_DIR", run_dir.display().to_string()),
            ("NGINX_LOG_DIR", log_dir.display().to_string()),
        ]);
        fs::write(&conf, text).unwrap();
        let _ = fs::remove_file(&error_log);
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            // The error log before the configuration is read (the default may not be writable).
            .arg("-e")
            .arg(&error_log)
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut guard = Nginx { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = guard.child.try_wait().unwrap() {
                let log = fs::read_to_string(&error_log).unwrap_or_default();
                if log.contains("Address already in use") {
                    break; // another port
                }
                panic!("nginx exited ({status}) at start-up:\n{log}");
            }
            if TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return guard;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {port} within 15 s:\n{}",
                fs::read_to_string(&error_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("nginx found no free port in 5 attempts");
}

// ---------------------------------------------------------------------------------------
// The deployment: certificates, users file, Vellum, nginx
// ---------------------------------------------------------------------------------------

struct Deployment {
    // Field order is drop order: nginx stops before the folder it uses is removed.
    nginx: Nginx,
    _vellum: oneshot::Sender<()>,
    curl: PathBuf,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// One curl request's outcome: curl's exit code (0 unless the transfer failed, e.g. in the TLS
/// handshake), the HTTP status (0 without a response), the body and curl's messages.
#[derive(Debug)]
struct Reply {
    exit: i32,
    status: u16,
    body: Vec<u8>,
    stderr: String,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.text(), self.stderr))
    }

    /// Asserts a response with `status`, and returns it for more checks.
    fn expect(&self, status: u16, what: &str) -> &Self {
        assert_eq!(
            (self.exit, self.status),
            (0, status),
            "{what}: curl exit {}, status {}: {}\n{}",
            self.exit,
            self.status,
            self.text(),
            self.stderr
        );
        self
    }
}

impl Deployment {
    async fn start(test: &str) -> Option<Deployment> {
        let tools = tools(test)?;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();

        fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
        let pki = Pki {
            dir: &dir,
            openssl: &tools.openssl,
        };
        // One CA issues the server's certificate, another the clients'. A third, which nginx
        // does not trust, issues a certificate that copies alice's subject.
        pki.ca("server-ca", "/O=Vellum test/CN=Vellum test server CA");
        pki.leaf(
            "server",
            "/O=Vellum test/CN=localhost",
            "server-ca",
            "server",
        );
        pki.ca("clients-ca", "/O=Vellum test/CN=Vellum test client CA");
        pki.leaf("alice", ALICE_SUBJ, "clients-ca", "client");
        pki.leaf("carol", CAROL_SUBJ, "clients-ca", "client");
        pki.leaf("bob", BOB_SUBJ, "clients-ca", "client");
        pki.ca("rogue-ca", "/O=Vellum test/CN=Someone else's CA");
        pki.leaf("mallory", ALICE_SUBJ, "rogue-ca", "client");

        // gm-jwt-security's format; the labels are nginx's $ssl_client_s_dn, exactly.
        let users = json!({"users": [
            {"label": ALICE_DN, "values": alice_values()},
            {"label": CAROL_DN, "values": carol_values()},
        ]});
        let users_file = dir.join("users.json");
        fs::write(&users_file, serde_json::to_vec_pretty(&users).unwrap()).unwrap();

        let (addr, shutdown) = start_vellum(&dir.join("data"), &users_file).await;
        let nginx = tokio::task::block_in_place(|| start_nginx(&tools.nginx, &dir, addr));
        Some(Deployment {
            nginx,
            _vellum: shutdown,
            curl: tools.curl,
            dir,
            _tmp: tmp,
        })
    }

    /// curl through nginx: `client` names the certificate to present (`None`: none), `args`
    /// are more curl arguments, `path` the request target.
    async fn curl(&self, client: Option<&str>, args: &[&str], path: &str) -> Reply {
        let mut cmd = Command::new(&self.curl);
        // -q first: no ~/.curlrc. No proxy from the environment, whatever it says.
        cmd.args(["-q", "-sS", "--noproxy", "*", "--max-time", "30"])
            .args(["--cacert", "server-ca.crt"])
            .args(["-w", "\n%{http_code}"])
            .current_dir(&self.dir);
        if let Some(c) = client {
            cmd.args(["--cert", &format!("{c}.crt"), "--key", &format!("{c}.key")]);
        }
        cmd.args(args)
            .arg(format!("https://127.0.0.1:{}{path}", self.nginx.port));
        let out = tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output())
            .await
            .unwrap()
            .expect("run curl");
        // The body, then "\n" and the status that -w appends.
        let mut stdout = out.stdout;
        let cut = stdout.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let status = String::from_utf8_lossy(&stdout[cut..])
            .trim()
            .parse()
            .unwrap_or(0);
        stdout.truncate(cut);
        Reply {
            exit: out.status.code().unwrap_or(-1),
            status,
            body: stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn self_claims(&self, client: &str, args: &[&str]) -> Value {
        self.curl(Some(client), args, "/self")
            .await
            .expect(200, &format!("GET /self as {client} {args:?}"))
            .json()
    }
}

/// Vellum in-process on an ephemeral loopback port with `users_file`, trusting loopback
/// proxies (the default, spelled out). Dropping the sender stops it.
async fn start_vellum(data_dir: &Path, users_file: &Path) -> (SocketAddr, oneshot::Sender<()>) {
    let args = [
        "vellum".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--users-file".into(),
        users_file.display().to_string(),
        "--trusted-proxies".into(),
        "127.0.0.1/32,::1/128".into(),
    ];
    let serve = vellum::cli::Cli::try_parse_from(args).unwrap().serve;
    let config = vellum::config::Config::from_args(serve).unwrap();
    let app = vellum::app::Application::build(config).await.unwrap();
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// 200 KiB that are not text, so nothing on the way may treat them as such.
fn payload() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..200 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_in_the_users_file_is_that_users_identity() {
    let Some(d) = Deployment::start("known certificates").await else {
        return;
    };
    assert_eq!(
        d.self_claims("alice", &[]).await,
        json!({"label": ALICE_DN, "values": alice_values()})
    );
    assert_eq!(
        d.self_claims("carol", &[]).await,
        json!({"label": CAROL_DN, "values": carol_values()})
    );

    // Writes and reads through the proxy, as alice: her home folder, then a file in it whose
    // 200 KiB stream through nginx both ways. The events record her DN as their author.
    fs::write(
        d.dir.join("home.json"),
        json!([{"action": "C", "parentoid": "1/world", "name": "alice@example.com"}]).to_string(),
    )
    .unwrap();
    let home = d
        .curl(Some("alice"), &["-F", "meta=@home.json"], "/write")
        .await
        .expect(200, "creating alice's home")
        .json();
    assert_eq!(home[0]["userpolicy"], json!({"label": ALICE_DN}), "{home}");

    let content = payload();
    fs::write(d.dir.join("report.bin"), &content).unwrap();
    fs::write(
        d.dir.join("upload.json"),
        json!([{"action": "U", "parentoid": "1/world/alice@example.com",
                "name": "report 1.bin", "isfile": true}])
        .to_string(),
    )
    .unwrap();
    let up = d
        .curl(
            Some("alice"),
            &["-F", "meta=@upload.json", "-F", "file=@report.bin"],
            "/write",
        )
        .await
        .expect(200, "uploading a file")
        .json();
    assert_eq!(up[0]["size"], json!(content.len()), "{up}");
    assert_eq!(up[0]["userpolicy"], json!({"label": ALICE_DN}), "{up}");

    let path = "/stream/1/world/alice@example.com/report%201.bin";
    let got = d.curl(Some("alice"), &[], path).await;
    got.expect(200, "reading the file back");
    assert!(
        got.body == content,
        "the file read back differs from the one uploaded"
    );
    // Home folders are owner-only: carol, known too, may not read it.
    d.curl(Some("carol"), &[], path)
        .await
        .expect(404, "carol reading alice's file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_certificate_whose_dn_is_not_in_the_users_file_is_a_401() {
    let Some(d) = Deployment::start("unknown DN").await else {
        return;
    };
    for path in ["/self", "/props/1"] {
        let r = d.curl(Some("bob"), &[], path).await;
        let body = r.expect(401, &format!("bob: GET {path}")).json();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        // Vellum's answer, naming the DN nginx sent.
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("CN=bob,OU=People"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_refuses_a_request_without_a_certificate_from_the_clients_ca() {
    let Some(d) = Deployment::start("no client certificate").await else {
        return;
    };
    // No certificate at all, even with a USER_DN header: nginx answers itself.
    let forged = format!("USER-DN: {ALICE_DN}");
    let no_header: &[&str] = &[];
    for args in [no_header, &["-H", &forged]] {
        let r = d.curl(None, args, "/self").await;
        r.expect(400, &format!("no certificate {args:?}"));
        assert!(
            r.text().contains("No required SSL certificate was sent"),
            "{}",
            r.text()
        );
    }
    // A certificate with alice's very subject, from a CA nginx does not trust.
    let r = d.curl(Some("mallory"), &[], "/self").await;
    r.expect(400, "a certificate from another CA");
    assert!(
        r.text().contains("The SSL certificate error"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_dn_header_from_the_client_is_not_passed_on() {
    let Some(d) = Deployment::start("forged USER_DN").await else {
        return;
    };
    // Every spelling Vellum reads (user_dn, user-dn, any case) claiming alice, sent with bob's
    // valid certificate: Vellum still sees bob's DN, which it does not know.
    for header in ["USER_DN", "user_dn", "USER-DN", "User-Dn"] {
        let forged = format!("{header}: {ALICE_DN}");
        let r = d.curl(Some("bob"), &["-H", &forged], "/self").await;
        let body = r.expect(401, &format!("bob forging {forged}")).json();
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("CN=bob,OU=People") && !msg.contains("alice"),
            "{forged}: {body}"
        );
    }
    // alice claiming to be carol stays alice.
    for header in ["USER_DN", "User-Dn"] {
        let forged = format!("{header}: {CAROL_DN}");
        let me = d.self_claims("alice", &["-H", &forged]).await;
        assert_eq!(me["label"], ALICE_DN, "{forged}");
    }
}
