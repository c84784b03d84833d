//! Error codes (in `Error` frames, the connection stays open) and close codes (the connection
//! ends). One table serves WebSocket close frames and WebTransport session closes.

/// Why a single request failed; the connection stays open. PROTOCOL.md § Error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// A field is out of range or malformed (empty room name, oversized client name…).
    BadRequest = 1,
    /// No room has that name.
    UnknownRoom = 2,
    /// The request needs the connection to have joined the room first.
    NotMember = 3,
    /// Message text is empty or longer than `MAX_TEXT_BYTES`.
    InvalidText = 4,
    /// Too many requests; retry after `retry_after_ms`.
    RateLimited = 5,
    /// The connection is already in `MAX_ROOMS_PER_CONNECTION` rooms.
    TooManyRooms = 6,
    /// Storage is unavailable; the send was not stored. Retry with the same `client_msg_id`.
    Unavailable = 7,
    /// `Hello` was sent twice.
    AlreadyGreeted = 8,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// Why the server ends a connection. 4000–4499: the client may reconnect (and resume);
/// 4500–4999: terminal, reconnecting with the same input fails again. PROTOCOL.md § Close codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// The node is shutting down; reconnect (another node will take the connection).
    ServerShutdown = 4000,
    /// The client did not read its events fast enough; reconnect and resume.
    Slow = 4001,
    /// An internal error on the server; reconnect with backoff.
    InternalError = 4002,
    /// Nothing was received for `IDLE_TIMEOUT_MS`; reconnect.
    IdleTimeout = 4003,
    /// Too many rejected requests; reconnect after at least 10 s.
    Flood = 4004,
    /// A frame could not be decoded; fix the client.
    BadFrame = 4500,
    /// A frame exceeded `MAX_CLIENT_FRAME`; fix the client.
    FrameTooLarge = 4501,
    /// The `Hello` version is not supported.
    UnsupportedVersion = 4502,
    /// A WebSocket text message was received; the protocol is binary only.
    TextNotSupported = 4503,
    /// A frame other than `Hello` came first.
    HelloRequired = 4504,
    /// The token expired or was revoked; log in again, then reconnect.
    Unauthorized = 4505,
}

impl CloseCode {
    /// The code as sent on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Whether a client should reconnect after this close.
    pub fn reconnect(self) -> bool {
        self.code() < 4500
    }
}
