//! Durable state: users, rooms, messages, revoked tokens. One trait, one implementation per
//! backend (`sqlite` is the embedded default). Every method is one round trip or one
//! transaction; `append` takes a batch so that one commit covers many sends (group commit).

pub mod postgres;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique field is taken (`"username"` or `"email"`).
    #[error("{0} already taken")]
    Conflict(&'static str),
    /// The backend cannot be reached or failed; the operation had no effect.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused this data (a constraint or a value it cannot hold); the operation
    /// had no effect, and the same data would be refused again.
    #[error("refused by the store: {0}")]
    Rejected(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A registered user with the password hash (never leaves the server).
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// User id.
    pub id: u64,
    /// Display name (unique, case-insensitive).
    pub username: String,
    /// Email (unique, case-insensitive).
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A room (channel).
#[derive(Debug, Clone)]
pub struct Room {
    /// Room id.
    pub id: u64,
    /// Unique name, e.g. `general`.
    pub name: String,
    /// One-line description.
    pub topic: String,
}

/// A send to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Target room.
    pub room_id: u64,
    /// Author.
    pub sender_id: u64,
    /// Author's name, carried so the stored row can be announced without a lookup.
    pub sender_name: String,
    /// Idempotency key.
    pub client_msg_id: [u8; 16],
    /// Text, already validated.
    pub text: String,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Server-wide id.
    pub id: u64,
    /// Room id.
    pub room_id: u64,
    /// Position in the room.
    pub seq: u64,
    /// Author id.
    pub sender_id: u64,
    /// Author name.
    pub sender_name: String,
    /// Idempotency key.
    pub client_msg_id: [u8; 16],
    /// Text.
    pub text: String,
    /// Commit time, ms since the Unix epoch.
    pub sent_at_ms: u64,
}

/// Outcome of one send in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored row (the original one for a duplicate).
    pub message: StoredMessage,
    /// `true` when the row existed already: nothing was written, no seq consumed.
    pub duplicate: bool,
}

/// Durable storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the backend is usable (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// Registers a user.
    async fn create_user(&self, username: &str, email: &str, password_hash: &str) -> StoreResult<UserRecord>;
    /// Looks a user up by email (case-insensitive).
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    /// Looks a user up by id.
    async fn user_by_id(&self, id: u64) -> StoreResult<Option<UserRecord>>;
    /// Every room, ordered by id.
    async fn rooms(&self) -> StoreResult<Vec<Room>>;
    /// Stores a batch of sends in one transaction, in order: each new one gets the room's next
    /// seq, a duplicate `(room, sender, client_msg_id)` returns the original row. All or nothing.
    async fn append(&self, batch: Vec<NewMessage>) -> StoreResult<Vec<Appended>>;
    /// Highest seq stored in a room (0 when empty).
    async fn head_seq(&self, room_id: u64) -> StoreResult<u64>;
    /// Highest seq of each of these rooms (rooms that do not exist are left out).
    async fn heads(&self, room_ids: &[u64]) -> StoreResult<Vec<(u64, u64)>>;
    /// Messages with `from <= seq <= to`, ascending.
    async fn range(&self, room_id: u64, from: u64, to: u64) -> StoreResult<Vec<StoredMessage>>;
    /// Up to `limit` messages with seq below `before` (all when `None`), newest first taken,
    /// returned ascending.
    async fn page_before(&self, room_id: u64, before: Option<u64>, limit: u32) -> StoreResult<Vec<StoredMessage>>;
    /// Revokes a token id until `expires_at` (Unix seconds).
    async fn revoke_token(&self, jti: &str, expires_at: u64) -> StoreResult<()>;
    /// Whether a token id was revoked.
    async fn is_revoked(&self, jti: &str) -> StoreResult<bool>;
    /// Records when users were last seen, `(user id, Unix ms)`; a time never moves back.
    async fn record_seen(&self, seen: Vec<(u64, u64)>) -> StoreResult<()>;
    /// When these users were last seen; users never seen (or unknown) are left out.
    async fn last_seen(&self, ids: &[u64]) -> StoreResult<Vec<(u64, u64)>>;
}
