//! Who is online (G5), at a cost that follows interest (G8).
//!
//! Connections are counted per user in *scopes*: [`Scope::Online`] (the user has a connection
//! at all) and [`Scope::Room`] (the user has a connection joined to that room). Many tabs on
//! many nodes count once. Every change returns the *transitions* it caused (a user's first
//! connection in a scope, or their last one gone); the node relays a room's transitions to the
//! nodes with members in that room, which send those members a fresh [`RoomPresence`] (at most
//! one per room per `ROOM_PRESENCE_INTERVAL_MS`, see [`refresh_rooms`]). Nothing about presence
//! goes to a connection that did not join the room, so a connection's cost does not grow with
//! the number of users online. Lists are read a bounded page at a time, ordered by username.
//!
//! When a user's last connection closes, the time is kept as their *last seen*.
//!
//! `local` is the embedded default (last seen kept in the store); `redis` counts across nodes
//! and survives node crashes (heartbeats and a reaper; last seen in a sorted set).
//!
//! [`RoomPresence`]: crate::wire::RoomPresence

mod local;
pub mod redis;

pub use local::{Counts, LocalPresence};
pub use redis::RedisPresence;

use crate::hub::Hub;
use crate::rooms::RoomDirectory;
use crate::wire::{ROOM_PRESENCE_INTERVAL_MS, ROOM_PRESENCE_PAGE, RoomPresence, UserRef};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why presence could not be read or updated.
#[derive(Debug, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct PresenceError(pub String);

/// Where a user is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Connected at all, on any node.
    Online,
    /// Joined to this room (by id), on any node.
    Room(u64),
}

impl Scope {
    /// The scope's name in Redis keys and fields (`*` or the room id).
    pub fn key(self) -> String {
        match self {
            Scope::Online => "*".into(),
            Scope::Room(id) => id.to_string(),
        }
    }

    /// The scope a [`Scope::key`] names.
    pub fn parse(key: &str) -> Option<Self> {
        match key {
            "*" => Some(Scope::Online),
            id => id.parse().ok().map(Scope::Room),
        }
    }
}

/// A user's first connection in a scope opened (`online`), or their last one went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Where.
    pub scope: Scope,
    /// Who.
    pub user: UserRef,
    /// In (`true`) or out.
    pub online: bool,
}

/// One page of a scope's users, by username.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Users in the scope, all pages together.
    pub online: u64,
    /// This page (shared: the in-process presence keeps a scope's first page until it changes).
    pub users: Arc<[UserRef]>,
    /// Whether users follow after this page.
    pub more: bool,
}

/// A user's online state and last-seen time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// User id.
    pub id: u64,
    /// At least one connection open.
    pub online: bool,
    /// When the last connection closed (Unix ms); `None` while online or never seen.
    pub last_seen_ms: Option<u64>,
}

/// Connection counting.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Counts one more connection of `user` in each scope.
    async fn enter(&self, user: &UserRef, scopes: &[Scope]) -> Result<Vec<Transition>, PresenceError>;
    /// Counts one connection of `user` fewer in each scope.
    async fn exit(&self, user: &UserRef, scopes: &[Scope]) -> Result<Vec<Transition>, PresenceError>;
    /// Up to `limit` users of a scope whose username sorts after `after`, with the scope's count.
    async fn page(&self, scope: Scope, after: Option<&str>, limit: usize) -> Result<Page, PresenceError>;
    /// Online state and last seen of each user, in the order asked.
    async fn status(&self, ids: &[u64]) -> Result<Vec<Status>, PresenceError>;
    /// How often [`Presence::upkeep`] must run.
    fn upkeep_every(&self) -> Duration;
    /// Periodic upkeep (heartbeat, reaping dead nodes, writing last-seen times).
    async fn upkeep(&self) -> Result<Vec<Transition>, PresenceError>;
    /// The node leaves: whatever it still counts is removed.
    async fn leave(&self) -> Result<Vec<Transition>, PresenceError>;
}

/// How often [`refresh_rooms`] looks for rooms whose presence changed.
const REFRESH_TICK: Duration = Duration::from_millis(100);

/// The node's task that sends `RoomPresence`: every room whose presence changed (the hub marks
/// it when a transition arrives, from this node or over the relay) and was last read at least
/// `ROOM_PRESENCE_INTERVAL_MS` ago gets its first page read once and handed to the hub, which
/// sends it, encoded once, to the room's members on this node (see `Hub::deliver_presence`
/// for when a frame that changes only the count waits).
pub async fn refresh_rooms(hub: Arc<Hub>, presence: Arc<dyn Presence>, rooms: Arc<RoomDirectory>) {
    let interval = Duration::from_millis(u64::from(ROOM_PRESENCE_INTERVAL_MS));
    let mut tick = tokio::time::interval(REFRESH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due = hub.presence_due(Instant::now(), interval);
        let reads = due.iter().map(|room| room_presence(presence.as_ref(), &rooms, *room));
        for (room, frame) in due.iter().zip(futures_util::future::join_all(reads).await) {
            match frame {
                Ok(Some(frame)) => {
                    hub.deliver_presence(*room, frame, Instant::now());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, room, "room presence not read; retrying");
                    hub.mark_presence(*room);
                }
            }
        }
    }
}

/// A room's `RoomPresence` frame: its count and first page (`None` for an unknown room).
pub async fn room_presence(
    presence: &dyn Presence,
    rooms: &RoomDirectory,
    room: u64,
) -> Result<Option<RoomPresence>, PresenceError> {
    let Some(name) = rooms.by_id(room).map(|r| r.name.clone()) else {
        return Ok(None);
    };
    let page = presence.page(Scope::Room(room), None, ROOM_PRESENCE_PAGE).await?;
    Ok(Some(RoomPresence { room: name, online: u32::try_from(page.online).unwrap_or(u32::MAX), users: page.users }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keys_round_trip() {
        for scope in [Scope::Online, Scope::Room(1), Scope::Room(u64::MAX)] {
            assert_eq!(Scope::parse(&scope.key()), Some(scope));
        }
        assert_eq!(Scope::parse("x"), None);
    }
}
