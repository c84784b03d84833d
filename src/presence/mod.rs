//! Who is online: a count of live connections per user across every node (G5). `local` is the
//! embedded default; `redis` counts across nodes and survives node crashes (heartbeats and a
//! reaper). Every call returns the transitions to announce: a user whose first connection
//! opened (online) or whose last one closed (offline), anywhere.

mod local;
pub mod redis;

pub use local::LocalPresence;
pub use redis::RedisPresence;

use crate::wire::{PresenceEvent, UserRef};
use async_trait::async_trait;

/// Why presence could not be read or updated.
#[derive(Debug, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct PresenceError(pub String);

/// Connection counting.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Counts one more connection of `user`.
    async fn connect(&self, user: &UserRef) -> Result<Vec<PresenceEvent>, PresenceError>;
    /// Counts one connection fewer.
    async fn disconnect(&self, user: &UserRef) -> Result<Vec<PresenceEvent>, PresenceError>;
    /// Everyone with at least one connection, ordered by username.
    async fn online(&self) -> Result<Vec<UserRef>, PresenceError>;
    /// Periodic upkeep (heartbeat, reaping dead nodes); `None` when there is none.
    fn upkeep_every(&self) -> Option<std::time::Duration> {
        None
    }
    /// One round of upkeep.
    async fn upkeep(&self) -> Result<Vec<PresenceEvent>, PresenceError> {
        Ok(Vec::new())
    }
    /// The node leaves: whatever it still counts is removed.
    async fn leave(&self) -> Result<Vec<PresenceEvent>, PresenceError> {
        Ok(Vec::new())
    }
}
