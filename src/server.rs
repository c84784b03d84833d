//! Wiring and lifecycle: choose the backends, bind, serve, and drain on shutdown.

use crate::auth::TokenKeys;
use crate::bus::{Bus, LocalBus};
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::presence::{LocalPresence, Presence};
use crate::rooms::RoomDirectory;
use crate::store::{PostgresStore, SqliteStore, Store, StoreError};
use crate::tickets::Tickets;
use crate::transport::certs::Certificates;
use crate::writer::Writer;
use axum::serve::ListenerExt;
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

/// Everything a connection or request handler needs, shared.
pub struct Node {
    /// Name in logs.
    pub node_id: String,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Relay between nodes.
    pub bus: Arc<dyn Bus>,
    /// Connection counting.
    pub presence: Arc<dyn Presence>,
    /// Local fan-out.
    pub hub: Arc<Hub>,
    /// The send path's group-commit writer.
    pub writer: Writer,
    /// Rooms by name and id.
    pub rooms: Arc<RoomDirectory>,
    /// Token keys.
    pub keys: TokenKeys,
    /// Extra allowed origins.
    pub allowed_origins: Vec<String>,
    /// Counters.
    pub metrics: Metrics,
    /// Becomes `true` when the node shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Set once shutdown began (`/readyz` → 503, upgrades refused).
    pub draining: AtomicBool,
    /// One permit per open connection.
    pub connection_slots: Arc<Semaphore>,
    /// Sends a connection may make in a burst.
    pub send_burst: u32,
    /// Sustained sends per second per connection.
    pub send_rate_per_sec: u32,
    /// Concurrent password hashes.
    pub hash_slots: Semaphore,
    next_connection: AtomicU64,
    /// WebTransport tickets.
    pub tickets: Tickets,
    /// Port of the TCP listener (the web client's origin).
    pub http_port: u16,
    /// The HTTP/3 certificate and UDP port, when WebTransport is on.
    pub webtransport: Option<(Arc<Certificates>, u16)>,
}

impl Node {
    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running server.
pub struct Running {
    addr: SocketAddr,
    node: Arc<Node>,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<()>,
    grace: Duration,
    max_connections: usize,
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

    /// Drains: stop accepting, tell every connection to go away (close 4000), wait for them up
    /// to the grace period.
    pub async fn shutdown(self) {
        self.node.draining.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let closed = tokio::time::timeout(self.grace, self.node.connection_slots.acquire_many(all)).await;
        if closed.is_err() {
            tracing::warn!("shutdown grace period over with connections still open");
        }
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

/// Builds the node and starts serving; returns once the listener is bound.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    if config.send_rate_per_sec == 0 || config.send_burst == 0 {
        return Err(ServerError::Config("send rate and burst must be at least 1".into()));
    }
    if config.redis_url.is_some() {
        return Err(ServerError::Config(
            "REDIS_URL is not supported by this version; unset it to use the in-process relay".into(),
        ));
    }
    if config.database_url.is_some() && config.jwt_secret.is_none() {
        return Err(ServerError::Config("JWT_SECRET is required with DATABASE_URL: every node must share it".into()));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let secret = jwt_secret(&config)?;
    let (store, store_name): (Arc<dyn Store>, String) = match &config.database_url {
        Some(url) => (Arc::new(PostgresStore::connect(url, config.db_pool_size).await?), "postgres".into()),
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

    let hub = Arc::new(Hub::default());
    let bus: Arc<dyn Bus> = Arc::new(LocalBus::new(hub.clone()));
    let presence: Arc<dyn Presence> = Arc::new(LocalPresence::default());
    let writer = Writer::start(store.clone(), bus.clone(), rooms.clone(), config.writers);
    let (stop, shutdown) = watch::channel(false);
    let node_id = config.node_id.clone().unwrap_or_else(|| hex::encode(rand::random::<[u8; 4]>()));
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
        metrics: Metrics::default(),
        shutdown: shutdown.clone(),
        draining: AtomicBool::new(false),
        connection_slots: Arc::new(Semaphore::new(config.max_connections)),
        send_burst: config.send_burst,
        send_rate_per_sec: config.send_rate_per_sec,
        hash_slots: Semaphore::new(2),
        next_connection: AtomicU64::new(1),
        tickets: Tickets::new(Duration::from_millis(config.ticket_ttl_ms)),
        http_port: addr.port(),
        webtransport: webtransport.as_ref().map(|(_, certs, port)| (certs.clone(), *port)),
    });
    if let Some((endpoint, certs, port)) = webtransport {
        tokio::spawn(crate::transport::wt::serve(node.clone(), endpoint.clone()));
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
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = crate::http::router(node.clone());
    let mut stopped = shutdown;
    let served = tokio::spawn(async move {
        let graceful = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(graceful).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(node = %node_id, store = %store_name, "listening on http://{addr}");
    Ok(Running {
        addr,
        node,
        stop,
        served,
        grace: Duration::from_secs(config.shutdown_grace_secs),
        max_connections: config.max_connections,
    })
}
