//! `vellum share`: a client of the share endpoints (SPEC §9.4) for people at a terminal,
//! like `vellum import` an HTTP client of the server's own API with the same identity flags.
//! Prints the server's JSON; exit 0 on success, 1 when the server refused (its error on
//! stderr), 2 for usage, connection or authentication problems.

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Percent-encodes a path segment or query value (ids are hex; this keeps odd input from
/// changing the request's shape).
pub(crate) fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

const EXIT_REFUSED: i32 = 1;
pub(crate) const EXIT_ERROR: i32 = 2;

/// How an API client (`vellum share`, `vellum tasks`) reaches the server and says who it is.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The server's base URL (including CLIENT_PREFIX if the API is mounted under one).
    #[arg(
        long,
        env = "VELLUM_URL",
        default_value = "http://127.0.0.1:8181",
        global = true
    )]
    pub url: String,
    /// A JWT for the `userpolicy` header (`vellum token` makes one for development).
    #[arg(
        long,
        env = "VELLUM_TOKEN",
        hide_env_values = true,
        conflicts_with = "user_dn",
        global = true
    )]
    pub token: Option<String>,
    /// A distinguished name for the `USER_DN` header (the server believes it only from
    /// its TRUSTED_PROXIES).
    #[arg(long, global = true)]
    pub user_dn: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShareArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: ShareCommand,
}

#[derive(Debug, Subcommand)]
pub enum ShareCommand {
    /// Share an object: with everyone whose claim holds a value (`--to email=bob@x.com`,
    /// `--to org=acme`), or as a link anyone may redeem (`--link`; its secret is printed
    /// once).
    Create(CreateArgs),
    /// The shares made with you (`incoming`, the default), by you (`outgoing`), or on an
    /// object and the folders above it (`--oid`, needs U on it).
    List {
        #[arg(value_parser = ["incoming", "outgoing"], default_value = "incoming")]
        which: String,
        /// Only shares in this state: pending, accepted, declined, revoked, expired.
        #[arg(long)]
        state: Option<String>,
        /// The shares on this object instead.
        #[arg(long, conflicts_with = "state")]
        oid: Option<String>,
    },
    /// One share.
    Show { id: String },
    /// A share's log, oldest first.
    Log { id: String },
    /// Accept a share's terms (as its recipient).
    Accept { id: String },
    /// Decline a share (as its recipient).
    Decline { id: String },
    /// Revoke a share and every share made through it (its sharer, an owner, or a
    /// recipient leaving).
    Revoke {
        id: String,
        /// Refuse (409) if the share changed after this tstamp.
        #[arg(long)]
        tstamp: Option<String>,
    },
    /// Redeem a link share's secret: a share to you, made through the link.
    Redeem {
        /// Secrets are base64url, so one in 64 begins with `-`; it is still the secret.
        #[arg(allow_hyphen_values = true)]
        secret: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The object's oid.
    pub oid: String,
    /// The audience, CLAIM=VALUE.
    #[arg(long, value_name = "CLAIM=VALUE", required_unless_present = "link")]
    pub to: Option<String>,
    /// A link share instead of an audience.
    #[arg(long, conflicts_with = "to")]
    pub link: bool,
    /// reader (R X), writer (C R U X) or full.
    #[arg(long, value_parser = ["reader", "writer", "full"], required_unless_present = "letters")]
    pub role: Option<String>,
    /// Letters instead of a role, e.g. RX.
    #[arg(long, conflicts_with = "role")]
    pub letters: Option<String>,
    #[arg(long)]
    pub terms: Option<String>,
    #[arg(long)]
    pub message: Option<String>,
    #[arg(long, value_parser = ["required", "not_required"])]
    pub acceptance: Option<String>,
    #[arg(long, value_parser = ["owner", "anyone"])]
    pub sharing_mode: Option<String>,
    /// RFC 3339, e.g. 2027-01-01T00:00:00Z.
    #[arg(long)]
    pub expires: Option<String>,
    /// For a link: how often it may be redeemed.
    #[arg(long, requires = "link")]
    pub max_redemptions: Option<u64>,
}

/// What to send: method, path, body.
fn request(cmd: &ShareCommand) -> Result<(reqwest::Method, String, Option<Value>), String> {
    use reqwest::Method;
    let id = |s: &str| encode_segment(s);
    Ok(match cmd {
        ShareCommand::Create(c) => {
            let audience = match (&c.to, c.link) {
                (_, true) => json!({"link": true}),
                (Some(to), false) => {
                    let (claim, value) = to
                        .split_once('=')
                        .ok_or_else(|| format!("--to {to:?} is not CLAIM=VALUE"))?;
                    json!({"claim": claim, "value": value})
                }
                (None, false) => return Err("give --to CLAIM=VALUE or --link".into()),
            };
            let mut body = json!({"oid": c.oid, "audience": audience});
            if let Some(r) = &c.role {
                body["role"] = json!(r);
            }
            if let Some(l) = &c.letters {
                let letters: Vec<String> = l.chars().map(|c| c.to_string()).collect();
                body["letters"] = json!(letters);
            }
            for (k, v) in [
                ("terms", &c.terms),
                ("message", &c.message),
                ("acceptance", &c.acceptance),
                ("sharing_mode", &c.sharing_mode),
                ("expires", &c.expires),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(n) = c.max_redemptions {
                body["max_redemptions"] = json!(n);
            }
            (Method::POST, "/shares".into(), Some(body))
        }
        ShareCommand::List { which, state, oid } => {
            let path = match (oid, state) {
                (Some(o), _) => format!("/shares?oid={}", id(o)),
                (None, Some(s)) => format!("/shares/{which}?state={}", id(s)),
                (None, None) => format!("/shares/{which}"),
            };
            (Method::GET, path, None)
        }
        ShareCommand::Show { id: i } => (Method::GET, format!("/shares/{}", id(i)), None),
        ShareCommand::Log { id: i } => (Method::GET, format!("/shares/{}/log", id(i)), None),
        ShareCommand::Accept { id: i } => (Method::POST, format!("/shares/{}/accept", id(i)), None),
        ShareCommand::Decline { id: i } => {
            (Method::POST, format!("/shares/{}/decline", id(i)), None)
        }
        ShareCommand::Revoke { id: i, tstamp } => {
            let q = tstamp
                .as_ref()
                .map(|t| format!("?tstamp={}", id(t)))
                .unwrap_or_default();
            (Method::DELETE, format!("/shares/{}{q}", id(i)), None)
        }
        ShareCommand::Redeem { secret } => (
            Method::POST,
            "/shares/redeem".into(),
            Some(json!({"secret": secret})),
        ),
    })
}

/// Runs the command; returns the exit status.
pub fn run(args: ShareArgs) -> i32 {
    match request(&args.command) {
        Ok((method, path, body)) => call("vellum share", &args.api, method, &path, body),
        Err(e) => {
            eprintln!("vellum share: {e}");
            EXIT_ERROR
        }
    }
}

/// Sends one request as `api` says and prints the JSON answer; returns the exit status:
/// 0 on success, 1 when the server refused (its error on stderr), 2 when it could not be
/// reached or did not know the caller.
pub fn call(
    program: &str,
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start: {e}");
            return EXIT_ERROR;
        }
    };
    let base = api.url.trim_end_matches('/').to_string();
    rt.block_on(async move {
        let client = reqwest::Client::new();
        let mut rb = client.request(method.clone(), format!("{base}{path}"));
        if let Some(t) = &api.token {
            rb = rb.header("userpolicy", t);
        } else if let Some(dn) = &api.user_dn {
            rb = rb.header("USER_DN", dn);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{program}: {method} {base}{path}: {e}");
                return EXIT_ERROR;
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{}", text.trim_end());
            return 0;
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let e = &v["error"];
                Some(format!(
                    "{} ({})",
                    e["message"].as_str()?,
                    e["code"].as_str()?
                ))
            })
            .unwrap_or(text);
        eprintln!("{program}: {}: {message}", status.as_u16());
        if status.as_u16() == 401 {
            EXIT_ERROR
        } else {
            EXIT_REFUSED
        }
    })
}

pub fn main(args: ShareArgs) -> anyhow::Result<()> {
    exit(run(args))
}

/// Flushes what was printed and exits with `code`.
pub fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    use super::ShareCommand;

    #[test]
    fn a_link_secret_that_begins_with_a_hyphen_is_taken_as_the_secret() {
        let cli = Cli::try_parse_from(["vellum", "share", "redeem", "-Ab_9"]).unwrap();
        let Some(Command::Share(args)) = cli.command else {
            panic!("not a share command");
        };
        assert!(matches!(args.command, ShareCommand::Redeem { secret } if secret == "-Ab_9"));
    }
}
