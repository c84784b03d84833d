//! Every frame of protocol v3. Field order is wire order, variant order is the discriminant:
//! never reorder, only append (PROTOCOL.md § Frames).

use serde::{Deserialize, Serialize};

/// A client-chosen id that makes a send idempotent (a UUID's 16 bytes).
pub type ClientMsgId = [u8; 16];

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// 0: first frame of every connection.
    Hello(Hello),
    /// 1: join a room, replaying what the client missed.
    Join(Join),
    /// 2: leave a room.
    Leave(Leave),
    /// 3: leave every joined room and join this one, atomically.
    Switch(Join),
    /// 4: post a message.
    Send(Send),
    /// 5: ask for a page of older messages.
    History(HistoryRequest),
    /// 6: start or stop typing.
    Typing(TypingUpdate),
    /// 7: keepalive; answered with `Pong`.
    Ping(Ping),
    /// 8: replace the text of one's own message (v3).
    Edit(Edit),
    /// 9: delete one's own message (v3).
    Delete(Delete),
    /// 10: move the user's read mark in a joined room (v3).
    MarkRead(MarkRead),
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// 0: answer to `Hello`.
    Welcome(Welcome),
    /// 1: retired (v1's `Online`, the list of everyone online); never sent in v2.
    RetiredOnline,
    /// 2: a join (or switch) took effect; replayed messages follow.
    Joined(Joined),
    /// 3: a leave took effect (also sent for each room a `Switch` left).
    Left(Left),
    /// 4: a send was stored.
    Ack(Ack),
    /// 5: a message of a joined room (replayed or live).
    Message(ChatMessage),
    /// 6: answer to a `History` request.
    History(HistoryPage),
    /// 7: someone in a joined room started or stopped typing.
    Typing(TypingEvent),
    /// 8: retired (v1's `Presence`, every user's arrival and departure); never sent in v2.
    RetiredPresence,
    /// 9: answer to `Ping`.
    Pong(Ping),
    /// 10: a request failed; the connection stays open.
    Error(ErrorFrame),
    /// 11: the server is about to close the connection, and why.
    GoAway(GoAway),
    /// 12: who is online in a joined room: a count and the first page (v2).
    RoomPresence(RoomPresence),
    /// 13: the user's read mark in a room moved (on any of their connections) (v3).
    ReadState(ReadState),
    /// 14: the user was added to a private channel or a direct conversation (v3).
    RoomAdded(RoomAdded),
}

/// Opens a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks (3). `Hello`'s layout is the same in every version.
    pub version: u32,
    /// Free-form client name and version, at most 64 bytes, for logs.
    pub client: String,
}

/// Join (or switch to) a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// Room name.
    pub room: String,
    /// Highest seq the client already has; `None` for no replay (start live at the head).
    pub after_seq: Option<u64>,
}

/// Leave a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    /// Room name.
    pub room: String,
}

/// Post a message to a joined room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    /// Room name.
    pub room: String,
    /// Idempotency key: a retry with the same id gets the same `Ack`.
    pub client_msg_id: ClientMsgId,
    /// Message text, at most 4000 UTF-8 bytes; not empty unless there are attachments.
    pub text: String,
    /// Ids of the sender's uploads to attach (at most 10; each one attached once).
    pub attachments: Vec<u64>,
}

/// Replace the text of one's own message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// Room name (joined).
    pub room: String,
    /// Idempotency key of the edit itself.
    pub client_msg_id: ClientMsgId,
    /// Seq of the message to edit (a `Post` of the sender, not deleted).
    pub target_seq: u64,
    /// The new text, as for `Send`.
    pub text: String,
}

/// Delete one's own message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// Room name (joined).
    pub room: String,
    /// Idempotency key of the deletion itself.
    pub client_msg_id: ClientMsgId,
    /// Seq of the message to delete (a `Post` of the sender, not deleted).
    pub target_seq: u64,
}

/// Move the user's read mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkRead {
    /// Room name (joined).
    pub room: String,
    /// Highest seq read; the mark never moves down, nor above the room's head.
    pub seq: u64,
}

/// Ask for messages older than `before_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// Echoed in the answer.
    pub request_id: u32,
    /// Room name.
    pub room: String,
    /// Only messages with a lower seq; `None` for the newest page.
    pub before_seq: Option<u64>,
    /// Page size, 1..=100.
    pub limit: u16,
}

/// Typing state of the sender in a joined room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingUpdate {
    /// Room name.
    pub room: String,
    /// `true` when typing started, `false` when it stopped.
    pub active: bool,
}

/// Keepalive with an opaque value echoed back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in `Pong`.
    pub nonce: u64,
}

/// A user as other users see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    /// Stable user id.
    pub id: u64,
    /// Display name.
    pub username: String,
}

/// The server's limits, so clients need not hard-code them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest client frame in bytes.
    pub max_frame_bytes: u32,
    /// Largest message text in bytes.
    pub max_text_bytes: u32,
    /// Rooms joined at once.
    pub max_rooms: u16,
    /// Largest history page.
    pub max_history_page: u16,
    /// Sustained sends per second.
    pub sends_per_sec: u16,
    /// Sends accepted in a burst before `sends_per_sec` applies.
    pub send_burst: u16,
}

/// Answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version in use.
    pub version: u32,
    /// The authenticated user.
    pub user: UserRef,
    /// Id of this connection, for support and logs.
    pub connection_id: u64,
    /// Send a `Ping` at least this often when idle (ms).
    pub heartbeat_ms: u32,
    /// Limits the server enforces.
    pub limits: Limits,
}

/// Who is online in a room: a full replacement of what the client showed, never a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomPresence {
    /// Room name.
    pub room: String,
    /// Distinct users with at least one connection joined to the room, on any node.
    pub online: u32,
    /// The first `ROOM_PRESENCE_PAGE` of them by username (bytewise ascending); shared with
    /// the presence that read them, encoded like a `Vec`.
    pub users: std::sync::Arc<[UserRef]>,
}

/// A join took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// Room name.
    pub room: String,
    /// Highest seq stored in the room when the join took effect.
    pub head_seq: u64,
    /// First seq that is replayed next (`head_seq + 1` when nothing is); a value above
    /// `after_seq + 1` means older missed messages must be fetched with `History`.
    pub replay_from: u64,
}

/// A leave took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    /// Room name.
    pub room: String,
}

/// A send was stored (identical for every retry of the same `client_msg_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Room name.
    pub room: String,
    /// The id the client chose.
    pub client_msg_id: ClientMsgId,
    /// Position in the room.
    pub seq: u64,
    /// Server-wide message id.
    pub message_id: u64,
    /// Server time of storage, ms since the Unix epoch.
    pub sent_at_ms: u64,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Room name.
    pub room: String,
    /// Position in the room (1, 2, 3… without gaps).
    pub seq: u64,
    /// Server-wide message id.
    pub message_id: u64,
    /// Author.
    pub sender: UserRef,
    /// The author's idempotency key (lets the author match its pending sends).
    pub client_msg_id: ClientMsgId,
    /// Server time of storage, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// Message text (a `Post`'s current text; an `Edit`'s new text; empty for a `Delete`).
    pub text: String,
    /// What this event is.
    pub kind: MessageKind,
    /// For an `Edit` or a `Delete`: the seq of the `Post` it changes.
    pub target_seq: Option<u64>,
    /// For a `Post`: when it was last edited, if ever.
    pub edited_at_ms: Option<u64>,
    /// For a `Post`: it was deleted (its text is empty and its attachments gone).
    pub deleted: bool,
    /// For a `Post`: files attached to it.
    pub attachments: Vec<Attachment>,
}

/// The kinds of events in a room's seq stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    /// 0: a message.
    Post,
    /// 1: the text of the `Post` at `target_seq` was replaced.
    Edit,
    /// 2: the `Post` at `target_seq` was deleted.
    Delete,
}

/// A file attached to a message; its bytes are at `GET /api/uploads/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Upload id.
    pub id: u64,
    /// File name as uploaded.
    pub name: String,
    /// Media type the server serves it with.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// The user's read mark in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// Room name.
    pub room: String,
    /// Highest seq the user has read.
    pub last_read_seq: u64,
}

/// The user now belongs to a closed room (fetch the room list again to show it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAdded {
    /// Room name.
    pub room: String,
}

/// A page of history, ascending by seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The request's id.
    pub request_id: u32,
    /// Room name.
    pub room: String,
    /// Messages in ascending seq.
    pub messages: Vec<ChatMessage>,
    /// `before_seq` for the next (older) page; `None` when this page reaches seq 1.
    pub next_before: Option<u64>,
}

/// Someone's typing state changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    /// Room name.
    pub room: String,
    /// Who.
    pub user: UserRef,
    /// Started (`true`) or stopped (`false`).
    pub active: bool,
}

/// A request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// See `ErrorCode`.
    pub code: u16,
    /// Human-readable reason, for logs.
    pub message: String,
    /// The room the failed request named, if any.
    pub room: Option<String>,
    /// The failed send's id, if it was a send.
    pub client_msg_id: Option<ClientMsgId>,
    /// The failed history request's id, if it was one.
    pub request_id: Option<u32>,
    /// When to retry, for `RateLimited` and `Unavailable`.
    pub retry_after_ms: Option<u32>,
}

/// The connection is about to close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoAway {
    /// See `CloseCode` (the same value as the transport's close code).
    pub code: u16,
    /// Short reason, at most 123 bytes.
    pub reason: String,
}
