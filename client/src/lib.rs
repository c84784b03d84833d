//! # socketchat-client
//!
//! What a native Rust application uses to talk to a SocketChat server, written against
//! `protocol/PROTOCOL.md` (version 3) and the server's own frame types.
//!
//! # Layout
//!
//! - [`account`]: HTTP before any frame — register, log in (the `token` cookie), and ask the
//!   server where to connect (`GET /api/transport`).
//! - [`link`]: one transport connection carrying frames: a WebSocket (one binary message per
//!   frame, § 1.2) or a WebTransport session's bidirectional stream (length-prefixed frames,
//!   § 1.3–1.4), authenticated with the cookie ([`Credentials::Cookie`]) or, over WebTransport,
//!   with a single-use ticket bought for each connection ([`Credentials::Ticket`]).
//! - [`connection`]: one greeted connection (`Hello` → `Welcome`) with request helpers that
//!   wait for their own answer (`Joined` and its replay, `Ack`, `History`) and keep the other
//!   frames, in order, for [`Connection::next_event`] (the newest 4,096 by default; the drop of
//!   older ones is reported). While it waits it keeps the connection alive with `Ping`s
//!   (`heartbeat_ms`, PROTOCOL.md § 6 step 9).
//! - [`client`]: [`Client`], which survives a lost connection: it reconnects with backoff,
//!   joins its rooms again from the last seq it saw (§ 6.5), and retries a send with the same
//!   `client_msg_id`, so nothing is missed and nothing is stored twice (§ 6.4).

pub mod account;
pub mod client;
pub mod connection;
pub mod link;

pub use account::Account;
pub use client::{Client, Transport};
pub use connection::Connection;
pub use link::{Credentials, Endpoint};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// HTTP failed or answered with an error status.
    #[error("http: {0}")]
    Http(String),
    /// The transport could not be opened, or the connection was lost.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The server closed the connection with `GoAway` (a code of PROTOCOL.md § 4.2).
    #[error("closed by the server: {code} {reason}")]
    Closed {
        /// Close code.
        code: u16,
        /// Reason.
        reason: String,
    },
    /// The server refused a request (`Error` frame, PROTOCOL.md § 4.1).
    #[error("refused: {} {}", .0.code, .0.message)]
    Refused(socketchat::wire::ErrorFrame),
    /// Frames that arrived while requests waited were not taken with `next_event` in time, and
    /// this many of the oldest were dropped (`Connection::set_event_limit`).
    #[error("{0} frames dropped: more arrived than were taken with next_event")]
    Dropped(u64),
    /// The server sent bytes that are not a frame of protocol v3.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether a new connection may succeed (PROTOCOL.md § 4.2: codes below 4500, a connection
    /// that dropped, and frames dropped for want of a reader: a new connection resumes from the
    /// last seq seen).
    pub fn reconnectable(&self) -> bool {
        match self {
            ClientError::Lost(_) | ClientError::Dropped(_) => true,
            ClientError::Closed { code, .. } => *code < 4500,
            _ => false,
        }
    }
}

/// Result of a client call.
pub type ClientResult<T> = Result<T, ClientError>;
