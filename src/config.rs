//! The only place that reads the command line and the environment. Every flag has an
//! environment variable; the defaults make `socketchat` a working single-node server.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `socketchat [serve] [options]`.
#[derive(Debug, Parser)]
#[command(name = "socketchat", version, about = "Real-time chat server (WebSocket, binary protocol)")]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending PostgreSQL migrations (needs DATABASE_URL) and exit.
    Migrate,
}

/// Server settings.
#[derive(Clone, Parser)]
pub struct Config {
    /// TCP address for HTTP, the web client and WebSocket.
    #[arg(long, env = "SOCKETCHAT_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,

    /// UDP address for HTTP/3 + WebTransport (`/wt`), or `off`.
    #[arg(long, env = "SOCKETCHAT_WT_LISTEN", default_value = "127.0.0.1:4433", global = true)]
    pub wt_listen: MaybeAddr,

    /// PEM certificate chain for HTTP/3 (with `--tls-key`); without both, a short-lived
    /// self-signed certificate is generated and published by hash.
    #[arg(long, env = "SOCKETCHAT_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "SOCKETCHAT_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,

    /// Directory for the embedded database and the generated JWT secret.
    #[arg(long, env = "SOCKETCHAT_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// PostgreSQL URL (`postgres://user@host:port/db`); without it the embedded SQLite store
    /// is used. Needs `JWT_SECRET`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Milliseconds a send waits for its commit before the sender is told the outcome is
    /// unknown (`Error` 7: retry with the same `client_msg_id`; a late commit is still
    /// delivered).
    #[arg(long, env = "SOCKETCHAT_STORE_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    pub store_timeout_ms: u64,

    /// Group-commit writers; rooms are spread over them, each commits its batches in order.
    /// Default: 2 on PostgreSQL, 1 on the embedded store (one SQLite connection writes, so a
    /// second writer would only wait for the first).
    #[arg(long, env = "SOCKETCHAT_WRITERS", global = true)]
    pub writers: Option<usize>,

    /// Sends waiting for each writer; beyond, a send is refused at once (Error 7 with a retry
    /// hint) instead of waiting: under overload the wait for a commit stays bounded.
    #[arg(long, env = "SOCKETCHAT_STORE_QUEUE", default_value_t = crate::writer::QUEUE, global = true)]
    pub store_queue: usize,

    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "SOCKETCHAT_DB_POOL", default_value_t = 16, global = true)]
    pub db_pool_size: usize,

    /// Redis URL for the relay between nodes, presence and tickets (`redis://host:port`; a
    /// Redis Cluster is detected, and may be given as a comma-separated list of seed nodes).
    /// Without it the in-process relay and presence are used. Needs `JWT_SECRET`.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, global = true)]
    pub redis_url: Option<String>,

    /// A node whose presence heartbeat is older than this many milliseconds is dead: its
    /// connections are counted offline (heartbeats and reaping run every fifth of it).
    #[arg(long, env = "SOCKETCHAT_NODE_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    pub node_timeout_ms: u64,

    /// On shutdown, how long `/readyz` answers 503 before connections are told to go away, so
    /// a load balancer stops sending new ones here first.
    #[arg(long, env = "SOCKETCHAT_DRAIN_DELAY_MS", default_value_t = 0, global = true)]
    pub drain_delay_ms: u64,

    /// Proxies (IP addresses, comma-separated) whose `X-Forwarded-For` header names the client.
    #[arg(long, env = "SOCKETCHAT_TRUSTED_PROXIES", value_delimiter = ',', global = true)]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// HS256 secret for tokens, at least 32 bytes; generated into the data dir when absent.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// Name of this node in logs (random per start by default).
    #[arg(long, env = "SOCKETCHAT_NODE_ID", global = true)]
    pub node_id: Option<String>,

    /// Extra origins allowed to open WebSockets and call the API (comma-separated); the
    /// server's own origin is always allowed.
    #[arg(long, env = "SOCKETCHAT_ALLOWED_ORIGINS", value_delimiter = ',', global = true)]
    pub allowed_origins: Vec<String>,

    /// Most concurrent connections; upgrades beyond get 503.
    #[arg(long, env = "SOCKETCHAT_MAX_CONNECTIONS", default_value_t = 10_000, global = true)]
    pub max_connections: usize,

    /// Most TCP sockets open at once, upgraded or not (0: `--max-connections` + 1024); lowered
    /// to fit the open-file limit, which is raised to its hard limit at start.
    #[arg(long, env = "SOCKETCHAT_MAX_SOCKETS", default_value_t = 0, global = true)]
    pub max_sockets: usize,

    /// Milliseconds a client has to send a request's headers, from the connection opening or
    /// the previous response (idle and half-sent connections are closed).
    #[arg(long, env = "SOCKETCHAT_HEADER_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    pub header_timeout_ms: u64,

    /// Most TCP sockets open at once from one client address (trusted proxies excepted).
    #[arg(long, env = "SOCKETCHAT_MAX_SOCKETS_PER_ADDRESS", default_value_t = 256, global = true)]
    pub max_sockets_per_address: usize,

    /// Sustained sends per second per connection (PROTOCOL.md § 5).
    #[arg(long, env = "SOCKETCHAT_SEND_RATE", default_value_t = crate::wire::SEND_RATE_PER_SEC, global = true)]
    pub send_rate_per_sec: u32,

    /// Sends per connection in a burst before the rate applies.
    #[arg(long, env = "SOCKETCHAT_SEND_BURST", default_value_t = crate::wire::SEND_BURST, global = true)]
    pub send_burst: u32,

    /// Milliseconds a WebSocket client may take to answer the server's ping while it is being
    /// written to (how far behind reading it may fall) before it is closed with 4001.
    #[arg(long, env = "SOCKETCHAT_MAX_LAG_MS", default_value_t = 10_000, global = true)]
    pub max_lag_ms: u64,

    /// Login and registration attempts per client address in a burst, before `--auth-per-minute`
    /// applies (`429` with `Retry-After` beyond).
    #[arg(long, env = "SOCKETCHAT_AUTH_BURST", default_value_t = 20, global = true)]
    pub auth_burst: u32,

    /// Sustained login and registration attempts per client address per minute.
    #[arg(long, env = "SOCKETCHAT_AUTH_PER_MINUTE", default_value_t = 60, global = true)]
    pub auth_per_minute: u32,

    /// Most members of a direct conversation, its creator included (2 allows one-to-one only).
    #[arg(long, env = "SOCKETCHAT_MAX_DM_MEMBERS", default_value_t = 8, global = true)]
    pub max_dm_members: u32,

    /// Channels and new direct conversations a user may create in a burst; then one a minute.
    #[arg(long, env = "SOCKETCHAT_ROOM_CREATION_BURST", default_value_t = 10, global = true)]
    pub room_creation_burst: u32,

    /// Largest file accepted by `POST /api/uploads`, in bytes.
    #[arg(long, env = "SOCKETCHAT_MAX_UPLOAD_BYTES", default_value_t = 10 * 1024 * 1024, global = true)]
    pub max_upload_bytes: usize,

    /// Lifetime of a WebTransport ticket in milliseconds.
    #[arg(long, env = "SOCKETCHAT_TICKET_TTL_MS", default_value_t = 30_000, global = true)]
    pub ticket_ttl_ms: u64,

    /// Token lifetime in seconds.
    #[arg(long, env = "SOCKETCHAT_TOKEN_TTL", default_value_t = 86_400, global = true)]
    pub token_ttl_secs: u64,

    /// Seconds to wait for connections to close on shutdown.
    #[arg(long, env = "SOCKETCHAT_SHUTDOWN_GRACE", default_value_t = 10, global = true)]
    pub shutdown_grace_secs: u64,
}

impl std::fmt::Debug for Config {
    /// Secrets and URLs with credentials are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("wt_listen", &self.wt_listen)
            .field("tls_cert", &self.tls_cert)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("node_timeout_ms", &self.node_timeout_ms)
            .field("drain_delay_ms", &self.drain_delay_ms)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("node_id", &self.node_id)
            .field("allowed_origins", &self.allowed_origins)
            .field("max_connections", &self.max_connections)
            .field("max_sockets", &self.max_sockets)
            .field("header_timeout_ms", &self.header_timeout_ms)
            .field("max_sockets_per_address", &self.max_sockets_per_address)
            .field("auth_burst", &self.auth_burst)
            .field("max_dm_members", &self.max_dm_members)
            .field("room_creation_burst", &self.room_creation_burst)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("store_timeout_ms", &self.store_timeout_ms)
            .field("auth_per_minute", &self.auth_per_minute)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("send_rate_per_sec", &self.send_rate_per_sec)
            .field("send_burst", &self.send_burst)
            .field("max_lag_ms", &self.max_lag_ms)
            .finish()
    }
}

/// A socket address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MaybeAddr {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        if value.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        value.parse().map(|a| Self(Some(a))).map_err(|e| format!("{value}: {e} (or `off`)"))
    }
}

impl Config {
    /// Defaults for an embedded node in `data_dir` on `listen`, HTTP/3 on a free UDP port of the
    /// same address (tests and embedding).
    pub fn embedded(listen: SocketAddr, data_dir: PathBuf) -> Self {
        let mut config = Config::parse_from(["socketchat"]);
        config.listen = listen;
        config.data_dir = data_dir;
        config.wt_listen = MaybeAddr(Some(SocketAddr::new(listen.ip(), 0)));
        // Embedded means embedded, whatever the environment says.
        config.database_url = None;
        config.redis_url = None;
        config.jwt_secret = None;
        config
    }
}
