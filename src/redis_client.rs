//! The node's command connection to Redis, standalone or Redis Cluster, shared by the relay,
//! presence and tickets. Which one is found out by asking the server (`INFO cluster`), so one
//! `REDIS_URL` works for both; a comma-separated list names several seed nodes of a cluster.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// How long one Redis command may take before it counts as failed.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What `REDIS_URL` points at.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    /// Seed URLs (one for a standalone server).
    pub urls: Vec<String>,
    /// Whether the server runs in cluster mode.
    pub cluster: bool,
}

/// A command connection that reconnects by itself; cheap to clone.
#[derive(Clone)]
pub enum RedisClient {
    /// One Redis server (multiplexed, reconnecting).
    Single(ConnectionManager),
    /// A Redis Cluster (commands routed by key slot).
    Cluster(ClusterConnection),
}

/// Splits `REDIS_URL` and asks the first reachable seed whether it is a cluster node.
pub async fn probe(url: &str) -> redis::RedisResult<RedisTarget> {
    let urls: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
    let mut last = None;
    for seed in &urls {
        let attempt = async {
            let client = redis::Client::open(seed.as_str())?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(info.contains("cluster_enabled:1"))
        };
        match attempt.await {
            Ok(cluster) => return Ok(RedisTarget { urls, cluster }),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| (redis::ErrorKind::InvalidClientConfig, "REDIS_URL is empty").into()))
}

impl RedisClient {
    /// Connects to the target.
    pub async fn connect(target: &RedisTarget) -> redis::RedisResult<Self> {
        if target.cluster {
            let client = redis::cluster::ClusterClientBuilder::new(target.urls.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()?;
            Ok(Self::Cluster(client.get_async_connection().await?))
        } else {
            let client = redis::Client::open(target.urls[0].as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_max_delay(Duration::from_secs(2));
            Ok(Self::Single(client.get_connection_manager_with_config(config).await?))
        }
    }
}

impl ConnectionLike for RedisClient {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
