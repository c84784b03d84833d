//! Durable state: users, rooms, messages, revoked tokens. One trait, one implementation per
//! backend (`sqlite` is the embedded default). Every method is one round trip or one
//! transaction; `append` takes a batch so that one commit covers many sends (group commit).

pub mod postgres;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub use crate::wire::{Attachment, MessageKind};
use async_trait::async_trait;
use std::sync::Arc;

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

/// Who may see and join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// Listed and joinable by every user.
    Public,
    /// Visible and joinable by its members only; owners invite and remove.
    Private,
    /// A direct conversation between its members (one-to-one or a group).
    Direct,
}

impl RoomKind {
    /// The name stored in the database and shown over HTTP.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Public => "public",
            RoomKind::Private => "private",
            RoomKind::Direct => "direct",
        }
    }

    /// The kind stored as `s` (anything unknown is treated as the most closed kind).
    pub fn parse(s: &str) -> Self {
        match s {
            "public" => RoomKind::Public,
            "private" => RoomKind::Private,
            _ => RoomKind::Direct,
        }
    }
}

/// A room (channel or direct conversation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Room id.
    pub id: u64,
    /// Unique name, e.g. `general`; direct rooms are named `@…`.
    pub name: String,
    /// One-line description.
    pub topic: String,
    /// Who may see it.
    pub kind: RoomKind,
}

/// A member's standing in a private or direct room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Invites and removes members.
    Owner,
    /// Reads and writes.
    Member,
}

impl Role {
    /// The name stored in the database and shown over HTTP.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    /// The role stored as `s`.
    pub fn parse(s: &str) -> Self {
        if s == "owner" { Role::Owner } else { Role::Member }
    }
}

/// A room to create, with its first members (the creator first, as its owner).
#[derive(Debug, Clone)]
pub struct NewRoom {
    /// Unique name.
    pub name: String,
    /// One-line description.
    pub topic: String,
    /// Who may see it.
    pub kind: RoomKind,
    /// The creator (owner); `None` for rooms seeded by the server.
    pub owner: Option<u64>,
    /// Further members (private and direct rooms).
    pub members: Vec<u64>,
}

/// A room as one user sees it in the room list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomListing {
    /// The room.
    pub room: Room,
    /// Highest seq stored in it.
    pub head_seq: u64,
    /// The user's read mark (0 when never read).
    pub last_read_seq: u64,
    /// Messages of others above the read mark, counted up to [`UNREAD_CAP`].
    pub unread: u64,
    /// The user's role, for a room they belong to.
    pub role: Option<Role>,
}

/// Unread messages are counted up to this many (a client shows "99+").
pub const UNREAD_CAP: u64 = 100;

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
    /// A message, or a change to one.
    pub kind: MessageKind,
    /// For an edit or a deletion: the seq of the message it changes.
    pub target_seq: Option<u64>,
    /// Upload ids to attach (a message only).
    pub attachments: Vec<u64>,
}

impl NewMessage {
    /// A plain message: text only.
    pub fn post(room_id: u64, sender: &crate::wire::UserRef, client_msg_id: [u8; 16], text: String) -> Self {
        Self {
            room_id,
            sender_id: sender.id,
            sender_name: sender.username.clone(),
            client_msg_id,
            text,
            kind: MessageKind::Post,
            target_seq: None,
            attachments: Vec::new(),
        }
    }

    /// Whether storing it needs checks against stored rows (an edit or deletion of the
    /// sender's own message, uploads of the sender's): such sends are stored one at a time
    /// with `Store::append_checked`, plain messages in batches with `Store::append`.
    pub fn needs_checks(&self) -> bool {
        self.kind != MessageKind::Post || !self.attachments.is_empty()
    }
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
    /// A message, or a change to one.
    pub kind: MessageKind,
    /// For an edit or a deletion: the seq of the message it changes.
    pub target_seq: Option<u64>,
    /// For a message: when it was last edited.
    pub edited_at_ms: Option<u64>,
    /// For a message: it was deleted.
    pub deleted: bool,
    /// For a message: its attachments.
    pub attachments: Vec<Attachment>,
}

/// An uploaded file, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The file's description as messages carry it.
    pub attachment: Attachment,
    /// Who uploaded it.
    pub owner_id: u64,
    /// The room of the message it is attached to, once it is.
    pub room_id: Option<u64>,
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
    /// The store one writer uses from its own thread, when the backend wants one of its own:
    /// PostgreSQL gives each writer connections made on that thread, so the database's answer
    /// wakes the writer directly rather than through a connection task on the node's busy
    /// runtime; SQLite commits on that thread rather than on the blocking pool. `None`: the
    /// writer uses this one.
    fn for_writer(&self) -> Option<Arc<dyn Store>> {
        None
    }
    /// Registers a user.
    async fn create_user(&self, username: &str, email: &str, password_hash: &str) -> StoreResult<UserRecord>;
    /// Looks a user up by email (case-insensitive).
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    /// Looks a user up by id.
    async fn user_by_id(&self, id: u64) -> StoreResult<Option<UserRecord>>;
    /// Looks a user up by username (case-insensitive).
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// Every public room, ordered by id.
    async fn rooms(&self) -> StoreResult<Vec<Room>>;
    /// A room by id, whoever may see it.
    async fn room_by_id(&self, id: u64) -> StoreResult<Option<Room>>;
    /// A room by name, whoever may see it.
    async fn room_by_name(&self, name: &str) -> StoreResult<Option<Room>>;
    /// Creates a room with its owner and members; `Conflict("name")` when the name is taken.
    async fn create_room(&self, room: NewRoom) -> StoreResult<Room>;
    /// The user's role in a room, `None` when they do not belong to it.
    async fn role(&self, room_id: u64, user_id: u64) -> StoreResult<Option<Role>>;
    /// Adds a member (a no-op for a member already); `false` when they were one already.
    async fn add_member(&self, room_id: u64, user_id: u64) -> StoreResult<bool>;
    /// Removes a member; `false` when they were none.
    async fn remove_member(&self, room_id: u64, user_id: u64) -> StoreResult<bool>;
    /// A room's members with their roles, by username.
    async fn members(&self, room_id: u64) -> StoreResult<Vec<(u64, String, Role)>>;
    /// The rooms a user sees: every public room and the private and direct rooms they belong
    /// to, ordered by id, with read marks and unread counts.
    async fn rooms_for(&self, user_id: u64) -> StoreResult<Vec<RoomListing>>;
    /// Moves a user's read mark in a room up to `seq` (never down, never above the head);
    /// returns the mark in force.
    async fn mark_read(&self, user_id: u64, room_id: u64, seq: u64) -> StoreResult<u64>;
    /// Stores a batch of sends in one transaction, in order: each new one gets the room's next
    /// seq, a duplicate `(room, sender, client_msg_id)` returns the original row. All or nothing.
    async fn append(&self, batch: Vec<NewMessage>) -> StoreResult<Vec<Appended>>;
    /// Stores one send that needs checks (see [`NewMessage::needs_checks`]) in its own
    /// transaction, like `append` (next seq, idempotent on `client_msg_id`). An edit or
    /// deletion must target a message of the same sender in the room that is not deleted; it
    /// changes that message too. Attachments must be uploads of the sender not attached yet.
    /// A check that fails is `Rejected` with the reason (nothing stored).
    async fn append_checked(&self, message: NewMessage) -> StoreResult<Appended>;
    /// Stores an uploaded file; it is attached later, or forgotten after a day.
    async fn create_upload(&self, owner_id: u64, name: &str, content_type: &str, data: &[u8]) -> StoreResult<Upload>;
    /// An upload's description and bytes.
    async fn upload(&self, id: u64) -> StoreResult<Option<(Upload, Vec<u8>)>>;
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

/// Clamps a client-supplied u64 into the stores' 64-bit signed integers: a value past
/// `i64::MAX` names no row (ids and seqs never get there), rather than failing the statement.
pub(crate) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The stored code of a kind of message event (`messages.kind`).
pub(crate) fn kind_code(kind: MessageKind) -> i16 {
    match kind {
        MessageKind::Post => 0,
        MessageKind::Edit => 1,
        MessageKind::Delete => 2,
    }
}

/// The kind stored as `code`.
pub(crate) fn kind_from(code: i64) -> MessageKind {
    match code {
        1 => MessageKind::Edit,
        2 => MessageKind::Delete,
        _ => MessageKind::Post,
    }
}

/// Attachments as stored with a message: a JSON array, empty text for none.
pub(crate) fn attachments_text(attachments: &[Attachment]) -> String {
    if attachments.is_empty() { String::new() } else { serde_json::to_string(attachments).unwrap_or_default() }
}

/// Attachments read back from a message row.
pub(crate) fn attachments_from(text: &str) -> Vec<Attachment> {
    if text.is_empty() { Vec::new() } else { serde_json::from_str(text).unwrap_or_default() }
}

/// What an edit or deletion found at its target: `(sender, kind, deleted)` of the row, if any.
pub(crate) fn check_target(m: &NewMessage, found: Option<(u64, MessageKind, bool)>) -> StoreResult<()> {
    match found {
        None => Err(StoreError::Rejected(format!("no message {} in this room", m.target_seq.unwrap_or(0)))),
        Some((sender, _, _)) if sender != m.sender_id => {
            Err(StoreError::Rejected("only your own messages can be changed".into()))
        }
        Some((_, kind, _)) if kind != MessageKind::Post => {
            Err(StoreError::Rejected("only a message can be changed, not an edit or deletion".into()))
        }
        Some((_, _, true)) => Err(StoreError::Rejected("the message was deleted".into())),
        Some(_) => Ok(()),
    }
}

/// What an attachment found for its upload id: `(upload, attached already)`, if any.
pub(crate) fn check_upload(m: &NewMessage, id: u64, found: Option<&Upload>) -> StoreResult<()> {
    match found {
        Some(u) if u.owner_id == m.sender_id && u.room_id.is_none() => Ok(()),
        Some(u) if u.owner_id == m.sender_id => Err(StoreError::Rejected(format!("upload {id} is attached already"))),
        _ => Err(StoreError::Rejected(format!("no upload {id} of yours"))),
    }
}

/// Unattached uploads are forgotten this long after they were made.
pub const UNATTACHED_UPLOAD_LIFETIME_MS: u64 = 24 * 3600 * 1000;
