//! Numeric limits of protocol v3 (PROTOCOL.md § Limits). Clients learn them from `Welcome`.

/// Protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 3;
/// Largest frame a client may send, in bytes (after framing is removed).
pub const MAX_CLIENT_FRAME: usize = 16 * 1024;
/// Largest frame the server sends (a full history page of maximum-length messages fits).
pub const MAX_SERVER_FRAME: usize = 1024 * 1024;
/// Largest message text, in UTF-8 bytes.
pub const MAX_TEXT_BYTES: usize = 4000;
/// Attachments per message.
pub const MAX_ATTACHMENTS: usize = 10;
/// Longest attachment file name, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest attachment media type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 100;
/// Read marks a connection may move in a burst, then `MARKS_PER_SEC`.
pub const MARK_BURST: u32 = 10;
/// Sustained read-mark moves per second per connection.
pub const MARKS_PER_SEC: u32 = 2;
/// Largest room name, in UTF-8 bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 64;
/// Largest `client` string in `Hello`.
pub const MAX_CLIENT_NAME_BYTES: usize = 64;
/// Rooms one connection may be joined to at once.
pub const MAX_ROOMS_PER_CONNECTION: usize = 32;
/// Largest `limit` of a history request; larger values are clamped.
pub const MAX_HISTORY_PAGE: u16 = 100;
/// Most messages a join replays; older missed messages are left to history paging.
pub const MAX_REPLAY: u64 = 500;
/// Sends accepted per connection in a burst; refilled at `SEND_RATE_PER_SEC`.
pub const SEND_BURST: u32 = 50;
/// Sustained sends per second per connection.
pub const SEND_RATE_PER_SEC: u32 = 20;
/// `Join`, `Switch` and `History` requests per connection in a burst (each may read up to 500
/// messages); refilled at `READ_RATE_PER_SEC`.
pub const READ_BURST: u32 = 20;
/// Sustained `Join`, `Switch` and `History` requests per second per connection.
pub const READ_RATE_PER_SEC: u32 = 5;
/// Typing updates per connection in a burst; refilled at `TYPING_RATE_PER_SEC`.
pub const TYPING_BURST: u32 = 5;
/// Sustained typing updates per second per connection.
pub const TYPING_RATE_PER_SEC: u32 = 1;
/// Rejected (rate-limited) requests tolerated within one idle window before the connection is
/// closed as a flood.
pub const FLOOD_REJECTIONS: u32 = 200;
/// A connection that sends nothing for this long is closed (clients ping every 25 s).
pub const IDLE_TIMEOUT_MS: u32 = 75_000;
/// Interval at which clients should send `Ping` when otherwise idle.
pub const HEARTBEAT_MS: u32 = 25_000;
/// Live events queued for one connection before it counts as a slow consumer.
pub const OUTBOUND_QUEUE: usize = 1024;
/// Longest username, in bytes (registration refuses longer ones).
pub const MAX_USERNAME_BYTES: usize = 32;
/// Users listed in one `RoomPresence` frame (the first page by username).
pub const ROOM_PRESENCE_PAGE: usize = 50;
/// Least time between two `RoomPresence` frames of one room: changes in between are coalesced.
pub const ROOM_PRESENCE_INTERVAL_MS: u32 = 500;
/// Largest `RoomPresence` frame: variant, a 64-byte room name, the count, and a full page of
/// users with the largest ids and longest names (PROTOCOL.md § 5).
pub const MAX_ROOM_PRESENCE_FRAME: usize =
    1 + (1 + MAX_ROOM_NAME_BYTES) + 5 + 1 + ROOM_PRESENCE_PAGE * (10 + 1 + MAX_USERNAME_BYTES);
