//! Wiring and lifecycle: choose the backends, bind, serve, and drain on shutdown.

use crate::auth::TokenKeys;
use crate::bus::{Bus, LocalBus, RedisBus};
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::presence::{LocalPresence, Presence, RedisPresence};
use crate::redis_client::{RedisClient, RedisTarget};
use crate::rooms::RoomDirectory;
use crate::store::{PostgresStore, SqliteStore, Store, StoreError};
use crate::tickets::Tickets;
use crate::transport::certs::Certificates;
use crate::writer::{Writer, WriterLimits};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting is invalid or names something this build does not have.
    #[error("configuration: {0}")]
    Config(String),
    /// The data directory or a file in it could not be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP/3 certificate could not be loaded or made.
    #[error("{0}")]
    Certificate(#[from] crate::transport::certs::CertError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running server.
pub struct Running {
    addr: SocketAddr,
    node: Arc<Node>,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<()>,
    grace: Duration,
    drain_delay: Duration,
    max_connections: usize,
    upkeep: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The bound TCP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared node state (tests inspect it).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Drains: `/readyz` answers 503 (for `drain_delay`, so a load balancer moves new
    /// connections elsewhere first), then every connection is told to go away (close 4000) and
    /// the node waits for them up to the grace period (a connection finishes the send it is
    /// storing first). Then the node's presence is removed and queued relay events go out.
    pub async fn shutdown(mut self) {
        self.node.draining.store(true, Ordering::Relaxed);
        if !self.drain_delay.is_zero() {
            tracing::info!(
                delay_ms = self.drain_delay.as_millis() as u64,
                "draining: not ready, then closing connections"
            );
            tokio::time::sleep(self.drain_delay).await;
        }
        let _ = self.stop.send(true);
        self.node.hub.shut_down();
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let closed = tokio::time::timeout(self.grace, self.node.connection_slots.acquire_many(all)).await;
        if closed.is_err() {
            tracing::warn!("shutdown grace period over with connections still open");
        }
        if let Some(upkeep) = self.upkeep.take() {
            upkeep.abort();
        }
        match self.node.presence.leave().await {
            Ok(events) => self.node.announce(events),
            Err(e) => tracing::warn!(error = %e, "presence not removed; other nodes reap it after the node timeout"),
        }
        self.node.bus.flush().await;
        let _ = tokio::time::timeout(self.grace, self.served).await;
        tracing::info!(node = %self.node.node_id, "stopped");
    }
}

/// Reads the JWT secret from the config, or from (generating once) `<data-dir>/jwt_secret`.
fn jwt_secret(config: &Config) -> Result<Vec<u8>, ServerError> {
    if let Some(secret) = &config.jwt_secret {
        if secret.len() < 32 {
            return Err(ServerError::Config("JWT_SECRET must be at least 32 bytes".into()));
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let path = config.data_dir.join("jwt_secret");
    let io = |source| ServerError::DataDir { path: path.display().to_string(), source };
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing.trim().len() >= 32 => {
            return Ok(existing.trim().as_bytes().to_vec());
        }
        Ok(_) => {
            return Err(ServerError::Config(format!("{} is shorter than 32 bytes", path.display())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, &secret).map_err(io)?;
    tracing::info!(path = %path.display(), "generated a JWT secret");
    Ok(secret.into_bytes())
}

/// Creates a file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// `socketchat migrate`: applies pending PostgreSQL migrations and exits.
pub async fn migrate(config: &Config) -> Result<usize, ServerError> {
    let url = config
        .database_url
        .as_deref()
        .ok_or_else(|| ServerError::Config("migrate needs DATABASE_URL (the embedded store migrates itself)".into()))?;
    Ok(PostgresStore::new(url, 1)?.migrate().await?)
}

/// Replaces the generated HTTP/3 certificate before it expires.
async fn rotate_certificates(certs: Arc<Certificates>) {
    loop {
        tokio::time::sleep(crate::transport::certs::ROTATE_AFTER).await;
        if let Err(e) = certs.rotate() {
            tracing::error!(error = %e, "certificate rotation failed; retrying in an hour");
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// Connects to Redis, retrying with backoff (and logging why) until it answers, like the
/// store does: a node without its relay would be a separate chat.
/// A `REDIS_URL` that cannot work is a configuration error, not something to wait out. The URL
/// is not repeated in the error: it may hold a password.
fn check_redis_url(url: &str) -> Result<(), ServerError> {
    let seeds: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    if seeds.is_empty() {
        return Err(ServerError::Config("REDIS_URL is empty".into()));
    }
    for seed in seeds {
        if redis::Client::open(seed).is_err() {
            return Err(ServerError::Config(
                "REDIS_URL is not a redis:// URL (or a comma-separated list of them)".into(),
            ));
        }
    }
    Ok(())
}

async fn connect_redis(url: &str) -> (RedisTarget, RedisClient) {
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            let target = crate::redis_client::probe(url).await?;
            let client = RedisClient::connect(&target).await?;
            Ok::<_, redis::RedisError>((target, client))
        };
        match attempt.await {
            Ok((target, client)) => {
                tracing::info!(cluster = target.cluster, seeds = target.urls.len(), "Redis connected");
                return (target, client);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis not usable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Presence upkeep: heartbeats and reaps dead nodes (announcing the rooms whose presence
/// changed with them), writes last-seen times.
async fn presence_upkeep(node: Arc<Node>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match node.presence.upkeep().await {
            Ok(events) => node.announce(events),
            Err(e) => tracing::warn!(error = %e, "presence upkeep failed; retrying"),
        }
    }
}

/// File descriptors kept for everything but client sockets: the store, Redis, the listeners,
/// log and data files.
const FD_RESERVE: u64 = 256;

/// The socket caps, fitted to the open-file limit (raised to its hard limit first).
fn socket_limits(config: &Config) -> crate::http::listener::Limits {
    let files = crate::http::listener::raise_file_limit();
    let wanted = if config.max_sockets == 0 { config.max_connections + 1024 } else { config.max_sockets };
    let fits = usize::try_from(files.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX).max(1);
    let max_sockets = wanted.min(fits);
    if max_sockets < wanted {
        tracing::warn!(files, wanted, max_sockets, "the open-file limit caps the sockets this node accepts");
    }
    tracing::info!(files, max_sockets, per_address = config.max_sockets_per_address, "socket limits");
    crate::http::listener::Limits {
        max_sockets,
        per_address: config.max_sockets_per_address.max(1),
        header_timeout: Duration::from_millis(config.header_timeout_ms.max(1)),
    }
}

/// Threads that hash passwords (each holds one argon2id hash's 19 MiB at a time).
const HASH_THREADS: usize = 2;
/// Password checks that may wait for a hashing thread; beyond, `503` with `Retry-After`.
const HASH_QUEUE: usize = 16;
/// Addresses and accounts whose login attempts are tracked at most.
const THROTTLED_KEYS: usize = 100_000;
/// Uploads received at once; each holds up to `--max-upload-bytes` in memory.
const UPLOADS_IN_FLIGHT: usize = 4;
/// Read marks a user may move over HTTP in a burst, then `READ_MARKS_PER_MINUTE`.
const READ_MARK_BURST: u32 = 20;
const READ_MARKS_PER_MINUTE: u32 = 120;
/// Files served at once; each is held in memory until its last byte is written.
const DOWNLOADS_IN_FLIGHT: usize = 16;
/// Uploads a user may make in a burst, then `UPLOADS_PER_MINUTE`.
const UPLOAD_BURST: u32 = 20;
const UPLOADS_PER_MINUTE: u32 = 10;
/// Failed logins per account before they are slowed down, then how many per minute.
const FAILED_LOGIN_BURST: u32 = 5;
const FAILED_LOGINS_PER_MINUTE: u32 = 6;

/// Builds the node and starts serving; returns once the listener is bound.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    crate::allocator::tune();
    if config.send_rate_per_sec == 0 || config.send_burst == 0 {
        return Err(ServerError::Config("send rate and burst must be at least 1".into()));
    }
    if config.max_lag_ms < 100 {
        return Err(ServerError::Config("the maximum lag must be at least 100 ms".into()));
    }
    if (config.database_url.is_some() || config.redis_url.is_some()) && config.jwt_secret.is_none() {
        return Err(ServerError::Config(
            "JWT_SECRET is required with DATABASE_URL or REDIS_URL: every node must share it".into(),
        ));
    }
    if config.redis_url.is_some() && config.database_url.is_none() {
        return Err(ServerError::Config(
            "REDIS_URL needs DATABASE_URL: nodes of a cluster share one PostgreSQL database".into(),
        ));
    }
    if let Some(url) = &config.redis_url {
        check_redis_url(url)?;
    }
    if config.node_timeout_ms < 1000 {
        return Err(ServerError::Config("the node timeout must be at least 1000 ms".into()));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let secret = jwt_secret(&config)?;
    let (store, store_name): (Arc<dyn Store>, String) = match &config.database_url {
        Some(url) => {
            let store = PostgresStore::connect(url, config.db_pool_size).await?;
            let limit = Duration::from_millis(config.store_timeout_ms.max(1));
            (Arc::new(store.with_statement_timeout(limit)?), "postgres".into())
        }
        None => {
            let path = config.data_dir.join("socketchat.db");
            (Arc::new(SqliteStore::open(&path)?), path.display().to_string())
        }
    };
    let rooms = Arc::new(RoomDirectory::new(store.rooms().await?));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let webtransport = match config.wt_listen.0 {
        None => None,
        Some(wt_addr) => {
            let certs = Arc::new(match (&config.tls_cert, &config.tls_key) {
                (Some(cert), Some(key)) => Certificates::from_pem(cert, key)?,
                (None, None) => Certificates::generated(config.data_dir.join("certs").join("wt-cert.pem"))?,
                _ => return Err(ServerError::Config("--tls-cert and --tls-key go together".into())),
            });
            let endpoint = crate::transport::wt::endpoint(wt_addr, certs.clone())
                .map_err(|e| ServerError::Config(format!("cannot listen on udp {wt_addr}: {e}")))?;
            let port = endpoint.local_addr().map(|a| a.port()).unwrap_or(wt_addr.port());
            Some((endpoint, certs, port))
        }
    };

    let node_id = config.node_id.clone().unwrap_or_else(|| hex::encode(rand::random::<[u8; 4]>()));
    let hub = Arc::new(Hub::default());
    let ticket_ttl = Duration::from_millis(config.ticket_ttl_ms);
    let (bus, presence, tickets): (Arc<dyn Bus>, Arc<dyn Presence>, Tickets) = match &config.redis_url {
        None => (Arc::new(LocalBus), Arc::new(LocalPresence::new(store.clone())), Tickets::new(ticket_ttl)),
        Some(url) => {
            let (target, commands) = connect_redis(url).await;
            let node_timeout = Duration::from_millis(config.node_timeout_ms);
            (
                Arc::new(RedisBus::start(target, commands.clone(), hub.clone())),
                Arc::new(RedisPresence::new(commands.clone(), &node_id, node_timeout)),
                Tickets::shared(ticket_ttl, commands),
            )
        }
    };
    tokio::spawn(crate::hub::repair(hub.clone(), store.clone(), rooms.clone(), crate::hub::HEAD_CHECK));
    tokio::spawn(crate::presence::refresh_rooms(hub.clone(), presence.clone(), rooms.clone()));
    let store_timeout = Duration::from_millis(config.store_timeout_ms.max(1));
    let writers = config.writers.unwrap_or(if config.database_url.is_some() { 2 } else { 1 });
    let limits = WriterLimits { shards: writers, queue: config.store_queue, timeout: store_timeout };
    let writer = Writer::start(store.clone(), hub.clone(), bus.clone(), rooms.clone(), limits);
    let (stop, shutdown) = watch::channel(false);
    let node = Arc::new(Node {
        node_id: node_id.clone(),
        store,
        bus,
        presence,
        hub,
        writer,
        rooms,
        keys: TokenKeys::new(&secret, config.token_ttl_secs),
        allowed_origins: config.allowed_origins.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        metrics: Metrics::default(),
        shutdown: shutdown.clone(),
        draining: AtomicBool::new(false),
        connection_slots: Arc::new(Semaphore::new(config.max_connections)),
        send_burst: config.send_burst,
        send_rate_per_sec: config.send_rate_per_sec,
        max_lag: Duration::from_millis(config.max_lag_ms),
        hasher: crate::hashing::Hasher::start(HASH_THREADS, HASH_QUEUE),
        auth_per_address: crate::rate::Throttle::new(config.auth_burst, config.auth_per_minute, THROTTLED_KEYS),
        failed_logins: crate::rate::Throttle::new(FAILED_LOGIN_BURST, FAILED_LOGINS_PER_MINUTE, THROTTLED_KEYS),
        room_creations: crate::rate::Throttle::new(config.room_creation_burst, 1, THROTTLED_KEYS),
        max_dm_members: config.max_dm_members.max(2) as usize,
        max_upload_bytes: config.max_upload_bytes,
        uploads_in_flight: Arc::new(Semaphore::new(UPLOADS_IN_FLIGHT)),
        downloads_in_flight: Arc::new(Semaphore::new(DOWNLOADS_IN_FLIGHT)),
        read_marks: crate::rate::Throttle::new(READ_MARK_BURST, READ_MARKS_PER_MINUTE, THROTTLED_KEYS),
        upload_throttle: crate::rate::Throttle::new(UPLOAD_BURST, UPLOADS_PER_MINUTE, THROTTLED_KEYS),
        next_connection: AtomicU64::new(1),
        tickets,
        http_port: addr.port(),
        webtransport: webtransport.as_ref().map(|(_, certs, port)| (certs.clone(), *port)),
    });
    let limits = socket_limits(&config);
    if let Some((endpoint, certs, port)) = webtransport {
        tokio::spawn(crate::transport::wt::serve(node.clone(), endpoint.clone(), limits));
        if certs.is_generated() {
            tokio::spawn(rotate_certificates(certs));
        }
        let mut stopped = node.shutdown.clone();
        tokio::spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            // Sessions get their GoAway from the drain; then the endpoint stops.
            endpoint.wait_idle().await;
            endpoint.close(0u32.into(), b"server stopped");
        });
        tracing::info!(node = %node.node_id, "WebTransport on udp/{port} at /wt");
    }
    let app = crate::http::router(node.clone());
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let served = tokio::spawn(crate::http::listener::serve(listener, app, node.clone(), limits, shutdown, grace));
    let upkeep = Some(tokio::spawn(presence_upkeep(node.clone(), node.presence.upkeep_every())));
    let relay = if config.redis_url.is_some() { "redis" } else { "in-process" };
    tracing::info!(node = %node_id, store = %store_name, relay, "listening on http://{addr}");
    Ok(Running {
        addr,
        node,
        stop,
        served,
        grace: Duration::from_secs(config.shutdown_grace_secs),
        drain_delay: Duration::from_millis(config.drain_delay_ms),
        max_connections: config.max_connections,
        upkeep,
    })
}
