//! The TCP accept loop (G6): every socket counts against a cap, and against a cap per client
//! address; requests must arrive in time; a failing `accept` (out of file descriptors) backs
//! off instead of spinning; shutdown closes idle keep-alive connections at once.
//!
//! - **Sockets**: at most `max_sockets` open at once, upgraded or not; beyond, a new socket is
//!   closed at once (logged, counted in `/metrics`).
//! - **Per address**: at most `per_address` sockets from one peer address; trusted proxies
//!   (HAProxy, which carries many clients) are exempt.
//! - **Time**: a request's headers must be complete within `header_timeout` of the connection
//!   opening or of the previous response (hyper's header read timeout also bounds the idle
//!   wait on a keep-alive connection), so half-sent and idle connections are closed.

use crate::node::Node;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Pause after `accept` failed (file descriptors exhausted): the loop never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Sockets open at once.
    pub(crate) max_sockets: usize,
    /// Sockets open at once from one address (trusted proxies excepted).
    pub(crate) per_address: usize,
    /// Time for a request's headers, from the connection opening or the previous response.
    pub(crate) header_timeout: Duration,
}

/// Open sockets per peer address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// Counts a listener's open connections, in all and per peer address (the TCP listener's
/// sockets; the QUIC endpoint's connections, which hold no file descriptor but as much memory).
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
    max: usize,
    max_per_address: usize,
}

/// One admitted connection: released (both counts) when dropped, as the connection ends.
pub(crate) struct Admitted {
    _slot: OwnedSemaphorePermit,
    addr: IpAddr,
    per_address: Arc<PerAddress>,
}

/// An admitted socket, in each request's extensions: the socket stays counted until the HTTP
/// connection and every holder are gone. A WebSocket upgrade takes it into the connection's
/// task, since hyper ends the HTTP connection once it has handed the socket over.
#[derive(Clone)]
pub(crate) struct Held {
    _admitted: Arc<Admitted>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.per_address.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.addr);
            }
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) on `listener` until `stop` turns true, then lets open
/// requests finish (idle connections close at once) for at most `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    node: Arc<Node>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let admission = Admission::new(limits);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    node.metrics.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let Some(admitted) = admission.admit(&node, peer.ip(), "socket") else {
            node.metrics.sockets_refused.fetch_add(1, Ordering::Relaxed);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop.clone();
        // Shared with each request: an upgraded connection outlives the HTTP connection that
        // carried it, and its handler keeps the socket counted (`Held`).
        let admitted = Held { _admitted: Arc::new(admitted) };
        tokio::spawn(async move {
            let held = admitted.clone();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(held.clone());
                let mut app = app.clone();
                // A Router is always ready: `call` needs no `poll_ready` first.
                async move { tower_service::Service::call(&mut app, req).await }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(grace, conn).await;
                }
            }
            drop(admitted);
        });
    }
    // Wait (at most `grace`) for the connections still finishing a request.
    admission.drained(grace).await;
}

/// Completes once the node stops (the watch's guard is not held across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(limits.max_sockets)),
            per_address: Arc::new(PerAddress::default()),
            max: limits.max_sockets,
            max_per_address: limits.per_address,
        }
    }

    /// Counts a new connection in, or says no (over the cap, or over its address's share;
    /// trusted proxies have no share). `what` names it in the log.
    pub(crate) fn admit(&self, node: &Node, addr: IpAddr, what: &str) -> Option<Admitted> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, max = self.max, "{what} refused: the node is at its cap");
            return None;
        };
        let mut counts = self.per_address.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(addr).or_insert(0);
        if *n >= self.max_per_address && !node.trusted_proxies.contains(&addr) {
            tracing::warn!(%addr, max = self.max_per_address, "{what} refused: too many from one address");
            return None;
        }
        *n += 1;
        Some(Admitted { _slot: slot, addr, per_address: self.per_address.clone() })
    }

    /// Whether `addr` holds half its share, or the node half its cap (trusted proxies have
    /// no share, only the cap).
    pub(crate) fn half_full(&self, node: &Node, addr: IpAddr) -> bool {
        let held = self.per_address.0.lock().unwrap_or_else(|p| p.into_inner()).get(&addr).copied().unwrap_or(0);
        (held * 2 >= self.max_per_address && !node.trusted_proxies.contains(&addr))
            || self.slots.available_permits() * 2 <= self.max
    }

    /// Waits (at most `grace`) until every admitted connection has ended.
    pub(crate) async fn drained(&self, grace: Duration) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, self.slots.acquire_many(all)).await;
    }
}

/// Raises the open-file soft limit to the hard limit (the common soft limit of 1024 runs out at
/// a thousand clients); returns the limit now in force.
pub(crate) fn raise_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return 1024;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        limit.rlim_cur
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}
