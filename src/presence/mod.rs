//! Who is online: a count of live connections per user (G5). `local` is the embedded default;
//! a Redis backend counts across nodes.

mod local;

pub use local::LocalPresence;

use crate::wire::UserRef;
use async_trait::async_trait;

/// Why presence could not be read or updated.
#[derive(Debug, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct PresenceError(pub String);

/// Connection counting.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Counts one more connection of `user`; `true` when it is the user's first (came online).
    async fn connect(&self, user: &UserRef) -> Result<bool, PresenceError>;
    /// Counts one connection fewer; `true` when it was the user's last (went offline).
    async fn disconnect(&self, user: &UserRef) -> Result<bool, PresenceError>;
    /// Everyone with at least one connection, ordered by username.
    async fn online(&self) -> Result<Vec<UserRef>, PresenceError>;
}
