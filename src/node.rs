//! The node's shared state: what every connection, request handler and transport needs.
//! It sits below the transports, `http` and `conn` (they import it; it imports none of them),
//! and `server` builds it.

use crate::auth::TokenKeys;
use crate::bus::Bus;
use crate::hub::{Event, EventKind, Hub, Topic};
use crate::metrics::Metrics;
use crate::presence::{Presence, Scope, Transition};
use crate::rooms::RoomDirectory;
use crate::store::{Room, RoomKind, Store, StoreResult};
use crate::tickets::Tickets;
use crate::transport::certs::Certificates;
use crate::writer::Writer;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{Semaphore, watch};

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
    /// Proxies whose `X-Forwarded-For` is believed (HAProxy in front of the node).
    pub trusted_proxies: Vec<IpAddr>,
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
    /// How long a WebSocket client may leave the server's ping unanswered while it is being
    /// written to (how far behind reading it may fall) before it is closed as a slow consumer.
    pub max_lag: std::time::Duration,
    /// Password hashing (a fixed pool with a bounded queue).
    pub hasher: crate::hashing::Hasher,
    /// Login and registration attempts per client address.
    pub auth_per_address: crate::rate::Throttle<IpAddr>,
    /// Failed logins per account (email, lowercased).
    pub failed_logins: crate::rate::Throttle<String>,
    /// Rooms created per user (channels and new direct conversations).
    pub room_creations: crate::rate::Throttle<u64>,
    /// Most members of a direct conversation, its creator included.
    pub max_dm_members: usize,
    /// Largest upload, in bytes.
    pub max_upload_bytes: usize,
    /// Uploads being received at once (each holds its body in memory).
    pub uploads_in_flight: Arc<Semaphore>,
    /// Files being served at once (each is held in memory until sent).
    pub downloads_in_flight: Arc<Semaphore>,
    /// Read marks moved over HTTP per user (each one reaches every node).
    pub read_marks: crate::rate::Throttle<u64>,
    /// Uploads per user.
    pub upload_throttle: crate::rate::Throttle<u64>,
    pub(crate) next_connection: AtomicU64,
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

    /// Delivers an event to this node's members at once and relays it to the other nodes.
    pub fn broadcast(&self, event: &Event) {
        self.hub.deliver(event);
        self.bus.publish(event);
    }

    /// Tells every node with members in a room that the room's presence changed (they send
    /// those members a fresh `RoomPresence`). Whether a user is online at all is shown to no
    /// connection live (it is read over HTTP), so those transitions go nowhere.
    pub fn announce(&self, transitions: Vec<Transition>) {
        for transition in transitions {
            if let Scope::Room(room) = transition.scope {
                let event = Event {
                    topic: Topic::Room(room),
                    kind: EventKind::Presence,
                    from_user: transition.user.id,
                    bytes: bytes::Bytes::new(),
                };
                self.broadcast(&event);
            }
        }
    }

    /// The room called `name` if `user_id` may see it: a public room, or a private or direct
    /// one they belong to. A room they may not see is answered like one that does not exist.
    pub async fn visible_room(&self, name: &str, user_id: u64) -> StoreResult<Option<Arc<Room>>> {
        let room = match self.rooms.by_name(name) {
            Some(room) => room,
            None => match self.store.room_by_name(name).await? {
                Some(room) => self.rooms.insert(room, |id| self.hub.wants(id)),
                None => return Ok(None),
            },
        };
        if room.kind != RoomKind::Public && self.store.role(room.id, user_id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(room))
    }

    /// Takes a user out of a room on every node: their connections joined to it leave it at
    /// once (they are sent `Left`).
    pub fn evict(&self, room_id: u64, user_id: u64) {
        let event = Event {
            topic: Topic::Room(room_id),
            kind: EventKind::Removed,
            from_user: user_id,
            bytes: bytes::Bytes::new(),
        };
        self.broadcast(&event);
    }

    /// Whether `user_id` may see the room with this id (see [`Node::visible_room`]).
    pub async fn may_see(&self, room_id: u64, user_id: u64) -> StoreResult<bool> {
        let room = match self.rooms.by_id(room_id) {
            Some(room) => room,
            None => match self.store.room_by_id(room_id).await? {
                Some(room) => self.rooms.insert(room, |id| self.hub.wants(id)),
                None => return Ok(false),
            },
        };
        Ok(room.kind == RoomKind::Public || self.store.role(room.id, user_id).await?.is_some())
    }

    /// Sends a frame to every connection of a user, on every node.
    pub fn tell_user(&self, user_id: u64, frame: &crate::wire::ServerFrame) {
        let event = Event {
            topic: Topic::Everyone,
            kind: EventKind::ToUser,
            from_user: user_id,
            bytes: crate::wire::encode_bytes(frame),
        };
        self.broadcast(&event);
    }

    /// The client's address (see [`client_addr`]).
    pub fn client_addr(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        client_addr(&self.trusted_proxies, peer, forwarded_for)
    }

    /// Whether the client reached us over HTTPS: a trusted proxy that terminated TLS says so
    /// with `X-Forwarded-Proto: https` (its last value). The node itself serves plain HTTP on
    /// TCP; from anyone else the header is ignored.
    pub fn forwarded_https(&self, peer: IpAddr, forwarded_proto: Option<&str>) -> bool {
        forwarded_https(&self.trusted_proxies, peer, forwarded_proto)
    }
}

/// The client's address: the peer's, or the last `X-Forwarded-For` hop when the peer is a
/// trusted proxy. From anyone else the header is ignored, so a client cannot claim another
/// address by sending it.
pub fn client_addr(trusted: &[IpAddr], peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
    match (peer, forwarded_for) {
        (Some(peer), Some(header)) if trusted.contains(&peer) => {
            header.rsplit(',').next().and_then(|hop| hop.trim().parse().ok()).or(Some(peer))
        }
        (peer, _) => peer,
    }
}

/// Whether `X-Forwarded-Proto` (its last value) says `https`, from a trusted proxy only.
pub fn forwarded_https(trusted: &[IpAddr], peer: IpAddr, forwarded_proto: Option<&str>) -> bool {
    trusted.contains(&peer)
        && forwarded_proto
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let trusted = [proxy];
        assert_eq!(client_addr(&trusted, Some(proxy), Some("198.51.100.1, 203.0.113.7")), Some(client));
        assert_eq!(client_addr(&trusted, Some(client), Some("198.51.100.1")), Some(client), "not a proxy");
        assert_eq!(client_addr(&trusted, Some(proxy), Some("garbage")), Some(proxy));
        assert_eq!(client_addr(&[], Some(proxy), Some("203.0.113.7")), Some(proxy), "nobody trusted");
    }

    #[test]
    fn a_forwarded_https_is_believed_only_from_trusted_proxies_and_only_as_its_last_value() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let trusted = [proxy];
        assert!(forwarded_https(&trusted, proxy, Some("https")));
        assert!(forwarded_https(&trusted, proxy, Some(" HTTPS ")));
        assert!(forwarded_https(&trusted, proxy, Some("http, https")), "the proxy's own value is last");
        assert!(!forwarded_https(&trusted, proxy, Some("https, http")), "a client's value before it");
        for garbage in ["", ",", "https://", "httpsx", "h\u{0}ttps", &"https".repeat(1000)] {
            assert!(!forwarded_https(&trusted, proxy, Some(garbage)), "{garbage:?}");
        }
        assert!(!forwarded_https(&trusted, proxy, None));
        assert!(!forwarded_https(&trusted, client, Some("https")), "not a proxy");
        assert!(!forwarded_https(&[], proxy, Some("https")), "nobody trusted");
    }
}
