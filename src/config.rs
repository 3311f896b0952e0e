//! One typed configuration, read once at start-up from flags and environment (flags win;
//! SPEC §1 names). Everything else receives the parts it needs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;

/// How SQLite makes a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// A committed transaction survives power loss (fsync on every commit).
    Full,
    /// Survives a crash of the process, not of the machine.
    Normal,
}

/// The embedded SQLite backend's own settings.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub synchronous: Synchronous,
}

impl SqliteConfig {
    /// Survives a process crash only: for tests and throw-away stores.
    pub const NORMAL: SqliteConfig = SqliteConfig {
        synchronous: Synchronous::Normal,
    };
}

/// The PostgreSQL backend's settings (SPEC §10): set, the metadata lives there instead of
/// in SQLite.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db?...`: a secret, never logged or shown.
    url: String,
    /// Most read connections one node opens (its writer and its listener take one each
    /// besides). Bounds what a burst of reads asks of the database's `max_connections`.
    pub pool_size: usize,
    /// A PEM file of certificates to trust, besides the system's, for TLS to the
    /// database (`sslmode=require`).
    pub ca_file: Option<PathBuf>,
}

impl PostgresConfig {
    pub fn new(url: String, pool_size: usize) -> PostgresConfig {
        PostgresConfig {
            url,
            pool_size: pool_size.max(1),
            ca_file: None,
        }
    }

    /// Trusts the certificates in `ca_file` too.
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> PostgresConfig {
        self.ca_file = ca_file;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"<secret>")
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `vellum serve` flags; each also reads the environment variable SPEC §1 names.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8181")]
    pub listen: SocketAddr,
    /// SQLite file and local blobs.
    #[arg(long, env = "DATA_DIR", default_value = "./vellum-data")]
    pub data_dir: PathBuf,
    /// Master key: 32 bytes in base64, or a passphrase.
    #[arg(long, env = "MASTERKEY", hide_env_values = true)]
    pub masterkey: Option<String>,
    /// Several master keys, `id:key,id:key`; the first is active.
    #[arg(long, env = "MASTERKEYS", hide_env_values = true)]
    pub masterkeys: Option<String>,
    /// Base64 of a PEM public key, PEM text, or a path.
    #[arg(long, env = "JWT_PUB")]
    pub jwt_pub: Option<String>,
    /// HMAC secret for HS256/384/512 (only without JWT_PUB).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Allowed JWT algorithms (default: the key's own family).
    #[arg(long, env = "JWT_ALGORITHMS", value_delimiter = ',')]
    pub jwt_algorithms: Vec<String>,
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// DN → claims file for USER_DN (default: fixtures/users.json if present).
    #[arg(long, env = "USERS_FILE")]
    pub users_file: Option<PathBuf>,
    /// CIDRs whose USER_DN header is believed.
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = "127.0.0.1/32,::1/128"
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Name of the home-folder root under `/`.
    #[arg(long, env = "GMDATA_NAMESPACE", default_value = "world")]
    pub gmdata_namespace: String,
    /// The claim naming a user's home folder.
    #[arg(long, env = "GMDATA_NAMESPACE_USERFIELD", default_value = "email")]
    pub gmdata_namespace_userfield: String,
    /// `full`: a 200 survives power loss; `normal`: survives a process crash.
    #[arg(
        long,
        env = "SYNCHRONOUS",
        value_enum,
        ignore_case = true,
        default_value = "full"
    )]
    pub synchronous: Synchronous,
    /// Keep the metadata in PostgreSQL (`postgres://…`) instead of SQLite in the data
    /// folder: several nodes may then serve one store (SPEC §10). Blobs stay where the
    /// blob settings put them.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Most read connections to PostgreSQL per node.
    #[arg(long, env = "DATABASE_POOL", default_value_t = 16)]
    pub database_pool: usize,
    /// Certificates (PEM) to trust for TLS to PostgreSQL, besides the system's.
    #[arg(long, env = "DATABASE_CA")]
    pub database_ca: Option<PathBuf>,
    /// A path prefix the API also answers under, e.g. /services/gm-data/0.1.
    #[arg(long, env = "CLIENT_PREFIX")]
    pub client_prefix: Option<String>,
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    // Connections and request shapes (issue 10): see `HttpLimits`.
    /// Time a client has to send a request head; also how long an idle keep-alive
    /// connection stays open, e.g. `10s`.
    #[arg(long, env = "HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,
    /// Waiting time after which a request body that has sent less than 1 KiB ends the
    /// request, e.g. `30s`.
    #[arg(long, env = "BODY_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub body_idle_timeout: Duration,
    /// Most connections served at once (a small reserve beyond it answers /healthz).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = HttpLimits::default().max_connections)]
    pub max_connections: usize,
    /// Most GET /notifications feeds one identity may hold open.
    #[arg(long, env = "MAX_FEEDS_PER_IDENTITY", default_value_t = HttpLimits::default().max_feeds_per_identity)]
    pub max_feeds_per_identity: usize,
    /// Largest request head (request line and headers), in bytes, and the most one read of a
    /// body takes; at least 8 KiB.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = HttpLimits::default().max_header_bytes)]
    pub max_header_bytes: usize,
    /// Largest header block of a multipart part (and preamble), in bytes.
    #[arg(long, env = "MAX_PART_HEADER_BYTES", default_value_t = HttpLimits::default().max_part_header_bytes)]
    pub max_part_header_bytes: usize,
    /// Most events in one POST /write.
    #[arg(long, env = "MAX_EVENTS_PER_WRITE", default_value_t = Limits::default().max_events_per_write)]
    pub max_events_per_write: usize,
    /// Largest metadata part of a POST /write, in bytes.
    #[arg(long, env = "MAX_METADATA_BYTES", default_value_t = Limits::default().max_metadata_bytes)]
    pub max_metadata_bytes: usize,
    /// Largest policy text, in bytes.
    #[arg(long, env = "MAX_POLICY_BYTES", default_value_t = Limits::default().max_policy_bytes)]
    pub max_policy_bytes: usize,
    /// Deepest folder a new object may be placed in (folders above it).
    #[arg(long, env = "MAX_FOLDER_DEPTH", default_value_t = Limits::default().max_folder_depth)]
    pub max_folder_depth: usize,
    /// Keep blobs in S3 (`true`) rather than under DATA_DIR/blobs.
    #[arg(long, env = "USES3", default_value = "false", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub uses3: bool,
    /// The S3 bucket (with USES3=true).
    #[arg(long, env = "FILE_BUCKET")]
    pub file_bucket: Option<String>,
    /// Key prefix for blobs (S3 and local).
    #[arg(long, env = "FILE_PARTITION", default_value = "")]
    pub file_partition: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// Any S3-compatible server; http:// only for a loopback host.
    #[arg(long, env = "AWS_ENDPOINT")]
    pub aws_endpoint: Option<String>,
    /// Files up to this many bytes are kept (encrypted) in the metadata store: one commit
    /// makes event and content durable. 0 puts every file in the blob store.
    #[arg(long, env = "INLINE_MAX_BYTES", default_value_t = Limits::default().inline_max_bytes)]
    pub inline_max_bytes: usize,
    /// Largest file content, in bytes.
    #[arg(long, env = "MAX_FILE_BYTES", default_value_t = Limits::default().max_file_bytes)]
    pub max_file_bytes: u64,
    /// Time one policy evaluation may take, e.g. `100ms`.
    #[arg(long, env = "POLICY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "100ms")]
    pub policy_timeout: Duration,
    /// Bytes one policy evaluation may allocate.
    #[arg(long, env = "POLICY_MEMORY", default_value_t = Limits::default().policy_memory_bytes)]
    pub policy_memory: u64,
    /// Instructions of the policy VM one evaluation may execute.
    #[arg(long, env = "POLICY_INSTRUCTIONS", default_value_t = Limits::default().policy_instructions)]
    pub policy_instructions: usize,
    /// Policy evaluations and compiles running at once (0: four per CPU).
    #[arg(long, env = "POLICY_CONCURRENCY", default_value_t = 0)]
    pub policy_concurrency: usize,
    /// Estimated bytes of compiled policies kept in memory (cache), e.g. 1073741824.
    #[arg(long, env = "POLICY_CACHE_BYTES", default_value_t = Limits::default().policy_cache_bytes)]
    pub policy_cache_bytes: u64,
    /// Policy time (compiling and evaluating) one request may spend, e.g. `30s`.
    #[arg(long, env = "POLICY_REQUEST_BUDGET", value_parser = humantime::parse_duration, default_value = "30s")]
    pub policy_request_budget: Duration,
    /// Policy time one write transaction may spend on the store's single writer, e.g. `250ms`;
    /// larger transactions get 50 us more per event.
    #[arg(long, env = "POLICY_TRANSACTION_BUDGET", value_parser = humantime::parse_duration, default_value = "250ms")]
    pub policy_transaction_budget: Duration,
    // Deferred work (SPEC §9.6): see `TaskConfig`.
    /// Tasks run at once (key rotations, sweeps, webhook deliveries).
    #[arg(long, env = "TASK_WORKERS", default_value_t = TaskConfig::default().workers)]
    pub task_workers: usize,
    /// How long a running task is held by its node without renewal, e.g. `30s`.
    #[arg(long, env = "TASK_LEASE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub task_lease: Duration,
    /// Runs of a task before it is marked failed (`POST /tasks/{id}/retry` resumes it).
    #[arg(long, env = "TASK_MAX_ATTEMPTS", default_value_t = TaskConfig::default().max_attempts)]
    pub task_max_attempts: u32,
    /// The first retry's delay; each further one doubles, up to TASK_BACKOFF_MAX.
    #[arg(long, env = "TASK_BACKOFF", value_parser = humantime::parse_duration, default_value = "1s")]
    pub task_backoff: Duration,
    #[arg(long, env = "TASK_BACKOFF_MAX", value_parser = humantime::parse_duration, default_value = "5m")]
    pub task_backoff_max: Duration,
    /// How often expired shares are recorded as `expired` (and rotated), e.g. `1m`.
    #[arg(long, env = "SHARE_SWEEP_INTERVAL", value_parser = humantime::parse_duration, default_value = "1m")]
    pub share_sweep_interval: Duration,
    /// Where every share-log entry is POSTed (https://, or http:// to a loopback host).
    #[arg(long, env = "SHARE_WEBHOOK_URL")]
    pub share_webhook_url: Option<String>,
    /// The HMAC-SHA256 key of `X-Vellum-Signature`.
    #[arg(long, env = "SHARE_WEBHOOK_SECRET", hide_env_values = true)]
    pub share_webhook_secret: Option<String>,
    /// How long one webhook delivery may take.
    #[arg(long, env = "SHARE_WEBHOOK_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub share_webhook_timeout: Duration,
}

/// The task queue's settings (SPEC §9.6). Each bounds what deferred work can cost.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Tasks this node runs at once (2): a rotation re-encrypts one blob per worker, with
    /// an upload's memory (about 4 MiB local, 28 MiB S3) and CPU each.
    pub workers: usize,
    /// A running task is renewed every third of this (30 s); a node that dies loses its
    /// tasks to another worker this long after its last renewal.
    pub lease: Duration,
    /// Runs before a task is failed (10): a receiver down for good, or a blob that no longer
    /// decrypts, stops being retried; `POST /tasks/{id}/retry` starts it again.
    pub max_attempts: u32,
    /// Backoff after a failed run: `backoff` doubled per attempt, at most `backoff_max`,
    /// times a random factor between 0.5 and 1 (1 s, 5 min).
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Expired shares are recorded (and their rotation queued) at most this long after
    /// their expiry (1 min); requests refuse them at once regardless.
    pub sweep_interval: Duration,
    pub webhook: Option<WebhookConfig>,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            workers: 2,
            lease: Duration::from_secs(30),
            max_attempts: 10,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(60),
            webhook: None,
        }
    }
}

/// Where share-log entries are delivered.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<hidden>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// SHARE_WEBHOOK_URL: http(s) only, and plain http only to this machine (entries name
/// people and objects; they do not cross a network unencrypted).
pub fn check_webhook_url(url: &str) -> Result<(), ConfigError> {
    let bad = |why: String| ConfigError::Invalid(format!("SHARE_WEBHOOK_URL {url:?}: {why}"));
    let u = reqwest::Url::parse(url).map_err(|e| bad(format!("not a URL ({e})")))?;
    match u.scheme() {
        "https" => {}
        "http" => {
            let host = u.host_str().unwrap_or("");
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = match bare.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.is_loopback(),
                Err(_) => host.eq_ignore_ascii_case("localhost"),
            };
            if !loopback {
                return Err(bad(
                    "plain http is allowed only to a loopback host (127.0.0.1, ::1, localhost); use https"
                        .into(),
                ));
            }
        }
        other => return Err(bad(format!("the scheme {other:?} is not http or https"))),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    Ok(())
}

/// Limits reported by GET /config. Each bounds what one request can cost the server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Limits {
    /// Events in one transaction: bounds the writer's time inside one commit (10,000
    /// events commit in well under a second; see README's performance section).
    pub max_events_per_write: usize,
    /// The metadata part is parsed whole, so it is bounded (64 MiB).
    pub max_metadata_bytes: usize,
    /// Policy text size: bounds compile time and the policy cache's memory (64 KiB).
    pub max_policy_bytes: usize,
    /// One policy evaluation's wall time (100 ms): a slow policy denies, never stalls.
    pub policy_timeout_ms: u64,
    /// Bytes one policy evaluation may allocate (64 MiB): a policy that builds huge values
    /// denies; all evaluations together hold at most `policy_concurrency` times this.
    pub policy_memory_bytes: u64,
    /// Policy VM instructions per evaluation (1,000,000): the work is counted, so a hostile
    /// loop stops at the same point however loaded the machine is.
    pub policy_instructions: usize,
    /// Evaluations and compiles running at once (four per CPU): bounds their memory, and
    /// their permits go round-robin between callers so one cannot starve another.
    pub policy_concurrency: usize,
    /// Compiled policies kept in memory, by their estimated size (1 GiB: 100,000 small
    /// policies, or a thousand of the largest): compiling again costs ~0.3-2 ms for a small
    /// policy, so this trades memory for listing speed.
    pub policy_cache_bytes: u64,
    /// Policy time one request may spend (30 s): a listing of many objects with slow
    /// policies ends with 503 `policy_budget_exceeded` instead of running on.
    pub policy_request_budget_ms: u64,
    /// Policy time one write transaction may spend on the single writer (250 ms, plus
    /// 50 us per event): the writer is never held longer by policies.
    pub policy_transaction_budget_ms: u64,
    /// Longest object name (bytes).
    pub max_name_bytes: usize,
    /// Deepest path.
    pub max_path_depth: usize,
    /// Deepest folder a new object may be placed in (128): `fulldir` names every folder
    /// above an object in each response, so this bounds what one event adds to a response
    /// (~2 KiB), whatever a chain of creates by reference would make of it.
    pub max_folder_depth: usize,
    /// Files up to this size live inline in the metadata store (64 KiB, one chunk): small
    /// uploads cost one commit instead of a blob write plus a commit.
    pub inline_max_bytes: usize,
    /// One file's content (1 TiB): uploads stream, so this bounds disk, not memory.
    pub max_file_bytes: u64,
}

impl Limits {
    /// Policy time for one request.
    pub fn request_budget(&self) -> Duration {
        Duration::from_millis(self.policy_request_budget_ms)
    }

    /// Policy time a write transaction of `events` events may spend on the writer.
    pub fn transaction_budget(&self, events: usize) -> Duration {
        Duration::from_millis(self.policy_transaction_budget_ms)
            + Duration::from_micros(50).saturating_mul(u32::try_from(events).unwrap_or(u32::MAX))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events_per_write: 50_000,
            max_metadata_bytes: 64 << 20,
            max_policy_bytes: 64 << 10,
            policy_timeout_ms: 100,
            policy_memory_bytes: 64 << 20,
            policy_instructions: 1_000_000,
            policy_concurrency: 4 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            policy_cache_bytes: 1 << 30,
            policy_request_budget_ms: 30_000,
            policy_transaction_budget_ms: 250,
            max_name_bytes: crate::model::path::MAX_NAME_BYTES,
            max_path_depth: crate::model::path::MAX_PATH_DEPTH,
            max_folder_depth: 128,
            inline_max_bytes: 64 << 10,
            max_file_bytes: 1 << 40,
        }
    }
}

/// What one connection or one request may hold of the server: time, a connection slot,
/// feeds, buffered bytes. Without them a client that sends slowly or never finishes holds
/// file descriptors and memory for as long as it likes.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A request head must arrive within this (10 s); it is also the idle keep-alive
    /// timeout, since hyper starts the clock when it begins waiting for the next head.
    pub header_read_timeout: Duration,
    /// A request body the server is waiting for must deliver 1 KiB (or end) within this
    /// much waiting (30 s): a stalled or trickling upload (1 byte/s) ends, while any real
    /// upload, however slow its link, passes. Time the server spends not reading (storing
    /// what it got) does not count.
    pub body_idle_timeout: Duration,
    /// Connections served at once (512): with the reserve's 16, half of a 1,024
    /// file-descriptor limit, leaving the rest to SQLite and blob files. Beyond it the
    /// reserve answers GET /healthz and refuses the rest with 503, so liveness checks still
    /// pass when the server is full.
    pub max_connections: usize,
    /// Notification feeds one identity may hold open (8); anonymous callers share one
    /// count. A feed holds a connection for as long as the client likes.
    pub max_feeds_per_identity: usize,
    /// A multipart part's header block, and the preamble before the first boundary (16 KiB):
    /// the multipart parser buffers them whole.
    pub max_part_header_bytes: usize,
    /// A request's head (32 KiB; hyper's least is 8 KiB): a longer one is answered 431
    /// (hyper checks between reads, so a head of up to about twice this can pass). It is
    /// also the connection's read buffer, so the most each read of a body takes. hyper's
    /// default (about 400 KiB) made reads large enough for the allocator to keep what each
    /// one freed: one 1 GiB upload peaked at 103-137 MiB resident, against 53-57 MiB with
    /// 32 KiB, at the same speed (653-798 against 640-810 MB/s, six runs each).
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_feeds_per_identity: 8,
            max_part_header_bytes: 16 << 10,
            max_header_bytes: 32 << 10,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub masterkey: Option<String>,
    pub masterkeys: Option<String>,
    pub identity: crate::identity::IdentityConfig,
    pub namespace: String,
    pub namespace_userfield: String,
    pub sqlite: SqliteConfig,
    /// Set: the metadata is in PostgreSQL, not SQLite.
    pub postgres: Option<PostgresConfig>,
    /// Normalised: starts with '/', no trailing '/'.
    pub client_prefix: Option<String>,
    pub log_format: LogFormat,
    pub limits: Limits,
    pub http: HttpLimits,
    pub blobs: crate::blob::BlobConfig,
    pub tasks: TaskConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

fn nonzero(d: Duration, name: &str) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::Invalid(format!("{name} must be above zero")));
    }
    Ok(d)
}

impl Config {
    pub fn from_args(a: ServeArgs) -> Result<Config, ConfigError> {
        crate::model::path::check_name(&a.gmdata_namespace)
            .map_err(|e| ConfigError::Invalid(format!("GMDATA_NAMESPACE: {e}")))?;
        if a.gmdata_namespace_userfield.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "GMDATA_NAMESPACE_USERFIELD is empty".into(),
            ));
        }
        let client_prefix = a
            .client_prefix
            .as_deref()
            .map(|p| format!("/{}", p.trim_matches('/')))
            .filter(|p| p != "/");
        // SPEC §1: USER_DN identities come from fixtures/users.json when present.
        let users_file = a.users_file.clone().or_else(|| {
            let p = PathBuf::from("fixtures/users.json");
            p.exists().then_some(p)
        });
        if a.policy_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "POLICY_TIMEOUT must be above zero".into(),
            ));
        }
        let limits = Limits {
            max_events_per_write: a.max_events_per_write.max(1),
            max_metadata_bytes: a.max_metadata_bytes.max(1024),
            max_policy_bytes: a.max_policy_bytes.max(256),
            max_folder_depth: a.max_folder_depth.max(2),
            policy_timeout_ms: a.policy_timeout.as_millis() as u64,
            policy_memory_bytes: a.policy_memory.max(1 << 20),
            policy_instructions: a.policy_instructions.max(1000),
            policy_concurrency: match a.policy_concurrency {
                0 => 4 * std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            },
            policy_cache_bytes: a.policy_cache_bytes.max(1 << 20),
            policy_request_budget_ms: a.policy_request_budget.as_millis().max(1) as u64,
            policy_transaction_budget_ms: a.policy_transaction_budget.as_millis().max(1) as u64,
            inline_max_bytes: a.inline_max_bytes,
            max_file_bytes: a.max_file_bytes.max(1),
            ..Limits::default()
        };
        let http = HttpLimits {
            header_read_timeout: nonzero(a.header_read_timeout, "HEADER_READ_TIMEOUT")?,
            body_idle_timeout: nonzero(a.body_idle_timeout, "BODY_IDLE_TIMEOUT")?,
            max_connections: a.max_connections.max(1),
            max_feeds_per_identity: a.max_feeds_per_identity,
            max_part_header_bytes: a.max_part_header_bytes.max(1024),
            // hyper refuses (panics on) a read buffer under 8 KiB.
            max_header_bytes: a.max_header_bytes.max(8 << 10),
        };
        let blobs = crate::blob::BlobConfig {
            uses3: a.uses3,
            bucket: a.file_bucket.clone(),
            partition: a.file_partition.clone(),
            aws_access_key_id: a.aws_access_key_id.clone(),
            aws_secret_access_key: a.aws_secret_access_key.clone(),
            aws_region: a.aws_region.clone(),
            aws_endpoint: a.aws_endpoint.clone(),
            data_dir: a.data_dir.clone(),
            ..crate::blob::BlobConfig::default()
        };
        let webhook = match a.share_webhook_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => {
                check_webhook_url(url)?;
                // Unsigned entries could be forged by anyone who can reach the receiver.
                let secret = a.share_webhook_secret.clone().filter(|s| !s.is_empty());
                let Some(secret) = secret else {
                    return Err(ConfigError::Invalid(
                        "SHARE_WEBHOOK_URL is set but SHARE_WEBHOOK_SECRET is not: deliveries are signed with it".into(),
                    ));
                };
                Some(WebhookConfig {
                    url: url.to_string(),
                    secret,
                    timeout: nonzero(a.share_webhook_timeout, "SHARE_WEBHOOK_TIMEOUT")?,
                })
            }
        };
        let tasks = TaskConfig {
            workers: a.task_workers.max(1),
            lease: nonzero(a.task_lease, "TASK_LEASE")?,
            max_attempts: a.task_max_attempts.max(1),
            backoff: nonzero(a.task_backoff, "TASK_BACKOFF")?,
            backoff_max: nonzero(a.task_backoff_max, "TASK_BACKOFF_MAX")?,
            sweep_interval: nonzero(a.share_sweep_interval, "SHARE_SWEEP_INTERVAL")?,
            webhook,
        };
        Ok(Config {
            listen: a.listen,
            tasks,
            identity: crate::identity::IdentityConfig {
                jwt_pub: a.jwt_pub.filter(|s| !s.trim().is_empty()),
                jwt_secret: a.jwt_secret.filter(|s| !s.is_empty()),
                jwt_algorithms: (!a.jwt_algorithms.is_empty()).then_some(a.jwt_algorithms),
                jwt_issuer: a.jwt_issuer,
                jwt_audience: a.jwt_audience,
                users_file,
                trusted_proxies: a.trusted_proxies,
                data_dir: a.data_dir.clone(),
                leeway: Duration::from_secs(5),
            },
            data_dir: a.data_dir,
            masterkey: a.masterkey,
            masterkeys: a.masterkeys,
            namespace: a.gmdata_namespace,
            namespace_userfield: a.gmdata_namespace_userfield,
            sqlite: SqliteConfig {
                synchronous: a.synchronous,
            },
            postgres: a
                .database_url
                .filter(|u| !u.is_empty())
                .map(|u| PostgresConfig::new(u, a.database_pool).with_ca_file(a.database_ca)),
            client_prefix,
            log_format: a.log_format,
            limits,
            http,
            blobs,
        })
    }

    pub fn policy_limits(&self) -> crate::policy::PolicyLimits {
        crate::policy::PolicyLimits {
            max_policy_bytes: self.limits.max_policy_bytes,
            eval_timeout: Duration::from_millis(self.limits.policy_timeout_ms),
            eval_instructions: self.limits.policy_instructions,
            eval_memory: self.limits.policy_memory_bytes,
            concurrency: self.limits.policy_concurrency,
            compiled_cache_bytes: self.limits.policy_cache_bytes,
            ..Default::default()
        }
    }
}
