//! WebSocket at `/ws`: checks the `Origin` and the `token` cookie **before** upgrading
//! (PROTOCOL.md § 1.2), then hands a tokio-tungstenite stream to the connection driver.
//! One binary message is one frame.

use crate::auth;
use crate::conn::{self, Inbound, Transport};
use crate::http::{ApiError, authenticate};
use crate::node::Node;
use crate::wire::{CloseCode, DecodeError, MAX_CLIENT_FRAME, UserRef};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode as WsCloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message,
    error::{CapacityError, ProtocolError},
};

/// Hard cap tungstenite enforces while reading; frames between `MAX_CLIENT_FRAME` and this are
/// read and refused by the codec with a precise close code.
const MAX_WS_MESSAGE: usize = 64 * 1024;

/// Small read buffer: it is allocated up front per connection (512 B: client frames are small;
/// a larger one is read in more calls, and the buffer grows for it). tungstenite hands every
/// frame straight to the [`Outbox`] (write buffer 0), which gathers a turn's frames for one
/// write: tungstenite's own write buffer never shrinks, so it only ever holds one frame.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * 1024 * 1024)
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE))
}

/// A frame larger than this goes out as WebSocket fragments of this size (RFC 6455 § 5.4; the
/// client's WebSocket reassembles the message): the largest frame tungstenite ever holds is
/// what each connection keeps for as long as it lives.
const FRAGMENT: usize = 4 * 1024;
/// What the [`Outbox`] gathers before it writes without waiting for the flush.
const OUTBOX_WRITE_AT: usize = 64 * 1024;

/// The connection's write buffer between tungstenite and the socket: frames are gathered until
/// the driver flushes (one write per turn), and the buffer's memory goes once it is written,
/// so an idle connection holds none, whatever it was sent before.
struct Outbox<S> {
    io: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    written: usize,
}

impl<S> Outbox<S> {
    fn new(io: S) -> Self {
        Self { io, buf: Vec::new(), written: 0 }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> Outbox<S> {
    /// Writes out what is gathered; the buffer's memory goes with it.
    fn poll_drain(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.buf.len() {
            match std::pin::Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.buf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// Says, without reading, when a read may make progress: the socket has data (or an error, or
/// its end) that no read has taken yet.
trait ReadReady {
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<()>;
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        tokio::net::TcpStream::poll_read_ready(self, cx).map(|_| ())
    }
}

/// The tests' in-memory stream: always try the read.
#[cfg(test)]
impl ReadReady for tokio::io::DuplexStream {
    fn poll_read_ready(&self, _: &mut std::task::Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

impl<S: ReadReady> ReadReady for Outbox<S> {
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        self.io.poll_read_ready(cx)
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Outbox<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Outbox<S> {
    /// Takes the bytes, unless `OUTBOX_WRITE_AT` is gathered and the socket takes nothing
    /// more: then the writer waits (the driver's write deadline and the slow-consumer kick
    /// apply), and the buffer stays bounded.
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.len() - self.written >= OUTBOX_WRITE_AT {
            std::task::ready!(self.poll_drain(cx))?;
        }
        self.buf.extend_from_slice(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `GET /ws`.
pub(crate) async fn upgrade(State(node): State<Arc<Node>>, mut req: Request) -> Response {
    let headers = req.headers();
    let key = match header_str(headers, header::SEC_WEBSOCKET_KEY) {
        Some(key)
            if has_token(headers, header::CONNECTION, "upgrade")
                && has_token(headers, header::UPGRADE, "websocket")
                && header_str(headers, header::SEC_WEBSOCKET_VERSION) == Some("13") =>
        {
            key.to_owned()
        }
        _ => {
            return ApiError::new(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade (version 13)").into_response();
        }
    };
    let origin = header_str(headers, header::ORIGIN);
    if !auth::origin_allowed(origin, header_str(headers, header::HOST), &node.allowed_origins) {
        tracing::warn!(origin = origin.unwrap_or(""), "cross-origin WebSocket upgrade refused");
        node.metrics.upgrades_refused.fetch_add(1, Ordering::Relaxed);
        return ApiError::new(StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let claims = match authenticate(&node, headers).await {
        Ok(claims) => claims,
        Err(e) => {
            node.metrics.upgrades_refused.fetch_add(1, Ordering::Relaxed);
            return e.into_response();
        }
    };
    if node.draining.load(Ordering::Relaxed) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server shutting down").into_response();
    }
    let Ok(slot) = node.connection_slots.clone().try_acquire_owned() else {
        tracing::warn!("connection limit reached, upgrade refused");
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let user = UserRef { id: claims.user_id().unwrap_or_default(), username: claims.name.clone() };
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let client = node.client_addr(peer, header_str(req.headers(), header::HeaderName::from_static("x-forwarded-for")));
    tracing::debug!(user = %user.username, client = ?client, "WebSocket upgrade");
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The socket stays counted against the node's socket caps for as long as it is open.
    let held = req.extensions_mut().remove::<crate::http::listener::Held>();
    tokio::spawn(async move {
        let Some(ws) = websocket(on_upgrade).await else { return };
        let credentials = conn::Credentials { user, token_id: claims.jti, expires_at: claims.exp };
        let connection = conn::run(node, WsTransport::new(ws), credentials);
        // A task of its own, holding the connection and its admissions only (released as it
        // ends): each connection pays for its task's size for as long as it lives, and the
        // upgrade's steps above would keep their places in it (128 bytes per connection).
        tokio::spawn(connection.map(move |()| drop((slot, held))));
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The upgraded connection as a WebSocket on the TCP socket itself, out of hyper's wrappers,
/// with what hyper read past the request: reads and writes go straight to the socket, and it
/// can say when a read is worth trying (`ReadReady`).
async fn websocket(on_upgrade: hyper::upgrade::OnUpgrade) -> Option<WebSocketStream<Outbox<tokio::net::TcpStream>>> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return None;
        }
    };
    // The listener serves TCP sockets only (`http::listener`).
    let Ok(hyper::upgrade::Parts { io, read_buf, .. }) = upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() else {
        tracing::error!("an upgraded connection that is not a TCP socket; dropped");
        return None;
    };
    // Copied out: hyper's read buffer, of which these bytes are a view, goes now.
    let part = read_buf.to_vec();
    drop(read_buf);
    let io = Outbox::new(io.into_inner());
    Some(WebSocketStream::from_partially_read(io, part, Role::Server, Some(config())).await)
}

struct WsTransport<S> {
    ws: WebSocketStream<S>,
    /// The last read found no whole message, having read the socket dry: the next one is
    /// worth trying only once the socket has more. The driver asks for a frame every turn,
    /// whatever woke it (most turns, a room's message to write); without this each of those
    /// went down through tungstenite to the socket to find it empty.
    read_dry: bool,
    /// A message went out in part: its first fragments were queued, and its write was given
    /// up (the write deadline, a slow consumer cut) before the last. No other message may
    /// follow inside it (RFC 6455 § 5.4), so none does: only control frames (the close).
    cut: bool,
}

impl<S> WsTransport<S> {
    fn new(ws: WebSocketStream<S>) -> Self {
        Self { ws, read_dry: false, cut: false }
    }
}

impl<S> Transport for WsTransport<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + ReadReady + Unpin + std::marker::Send,
{
    /// A WebSocket Ping: the client answers it (RFC 6455 § 5.5.2) once it has read what came
    /// before it.
    const PROBES: bool = true;

    async fn probe(&mut self, nonce: [u8; 8]) -> Result<(), String> {
        std::future::poll_fn(|cx| self.ws.poll_ready_unpin(cx)).await.map_err(|e| e.to_string())?;
        self.ws.start_send_unpin(Message::Ping(Bytes::copy_from_slice(&nonce))).map_err(|e| e.to_string())
    }

    async fn recv(&mut self) -> Inbound {
        // tungstenite answers "not yet" only after its read of the socket would block, with no
        // whole message left in its buffer (its pending Pong replies are written by the
        // driver's flush), so nothing but new input can change the answer.
        let next = std::future::poll_fn(|cx| {
            if self.read_dry {
                std::task::ready!(self.ws.get_ref().poll_read_ready(cx));
            }
            let next = self.ws.poll_next_unpin(cx);
            self.read_dry = next.is_pending();
            next
        })
        .await;
        match next {
            None => Inbound::Closed(None),
            Some(Ok(Message::Binary(bytes))) => Inbound::Frame(bytes),
            Some(Ok(Message::Text(_))) => Inbound::Text,
            Some(Ok(Message::Close(_))) => Inbound::Closed(None),
            Some(Ok(Message::Pong(payload))) => Inbound::Pong(payload),
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => Inbound::Activity,
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                Inbound::Malformed(DecodeError::TooLarge { len: size, max: max_size })
            }
            // The peer went without a close frame: a closed connection, not broken framing.
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                Inbound::Closed(Some("connection reset without a close frame".into()))
            }
            // A text message that is not even valid UTF-8 is still a text message (4503).
            Some(Err(WsError::Utf8(_))) => Inbound::Text,
            Some(Err(e @ WsError::Protocol(_))) => Inbound::Broken(e.to_string()),
            Some(Err(e)) => Inbound::Closed(Some(e.to_string())),
        }
    }

    /// Waits for room in the write buffer, then queues the frame, whole or (over `FRAGMENT`)
    /// in fragments: each WebSocket frame is built only once there is room, so no waiting
    /// future holds one (every connection's task is sized for its largest wait).
    ///
    /// After a message cut part-way, nothing more is fed: the connection is being closed, and
    /// the client sees the close frame (with the reason) rather than a broken message.
    async fn feed(&mut self, mut frame: Bytes) -> Result<(), String> {
        if self.cut {
            return Err("a message was cut part-way".into());
        }
        let mut opcode = OpCode::Data(Data::Binary);
        loop {
            std::future::poll_fn(|cx| self.ws.poll_ready_unpin(cx)).await.map_err(|e| e.to_string())?;
            // A frame within `FRAGMENT` is taken whole (no copy, no new reference).
            let piece = frame.split_to(FRAGMENT.min(frame.len()));
            let last = frame.is_empty();
            self.ws.start_send_unpin(Message::Frame(Frame::message(piece, opcode, last))).map_err(|e| e.to_string())?;
            self.cut = !last;
            if last {
                return Ok(());
            }
            opcode = OpCode::Data(Data::Continue);
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        self.ws.flush().await.map_err(|e| e.to_string())
    }

    /// A malformed WebSocket frame: close 1002 (RFC 6455 § 7.4.1), no `GoAway`.
    async fn abort(&mut self, reason: &str) {
        self.close_with(WsCloseCode::Protocol, reason).await;
    }

    async fn close(&mut self, code: CloseCode, reason: &str) {
        self.close_with(WsCloseCode::from(code.code()), reason).await;
    }
}

impl<S> WsTransport<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + ReadReady + Unpin + std::marker::Send,
{
    /// Sends the close frame, then reads (and drops) whatever the client still sends until its
    /// own close frame or EOF, for at most `CLOSE_DRAIN`: closing a socket with unread input
    /// makes the kernel answer with a reset, and the client would lose the close frame (and
    /// the `GoAway` before it) that explains why.
    async fn close_with(&mut self, code: WsCloseCode, reason: &str) {
        let frame = CloseFrame { code, reason: reason.to_owned().into() };
        if self.ws.close(Some(frame)).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_DRAIN, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                    // tungstenite reads nothing more after input it refused (a message over
                    // the limit, whose rest may still be on its way; a malformed frame): what
                    // the client still sends is read off the socket as bytes, and dropped.
                    None | Some(Err(_)) => break,
                }
            }
            let mut scratch = vec![0u8; 16 * 1024];
            let mut left = CLOSE_DRAIN_BYTES;
            while left > 0 {
                match tokio::time::timeout(CLOSE_QUIET, self.ws.get_mut().read(&mut scratch)).await {
                    Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                    // The end of the stream, an error, or a quiet client (its close frame,
                    // unparsed, came last).
                    _ => return,
                }
            }
        })
        .await;
    }
}

/// How long a closing connection's input is still read, so the close reaches the client.
const CLOSE_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);
/// After input tungstenite refused, at most this much more is read as bytes while closing...
const CLOSE_DRAIN_BYTES: usize = 16 << 20;
/// ...and only while some arrives at least this often.
const CLOSE_QUIET: std::time::Duration = std::time::Duration::from_millis(250);

/// Kept next to the transport so the two limits are read together.
const _: () = assert!(MAX_CLIENT_FRAME < MAX_WS_MESSAGE);

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_outbox_gathers_until_the_flush_then_holds_no_memory_and_stays_bounded() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut outbox = Outbox::new(near);
        outbox.write_all(b"one ").await.unwrap();
        outbox.write_all(b"two").await.unwrap();
        let mut byte = [0u8; 1];
        assert!(far.read(&mut byte).now_or_never().is_none(), "nothing is written before the flush");
        outbox.flush().await.unwrap();
        assert_eq!(outbox.buf.capacity(), 0, "the buffer's memory went once written");
        let mut got = [0u8; 7];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");

        // A peer that reads nothing: the outbox takes `OUTBOX_WRITE_AT` and then waits.
        let (near, mut far) = tokio::io::duplex(1024);
        let mut outbox = Outbox::new(near);
        let chunk = vec![7u8; 1024];
        let mut taken = 0;
        while let Some(written) = outbox.write(&chunk).now_or_never() {
            taken += written.unwrap();
            assert!(taken <= OUTBOX_WRITE_AT + 2 * chunk.len(), "bounded");
        }
        assert!(taken >= OUTBOX_WRITE_AT);
        // Once the peer reads, everything arrives in order.
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        outbox.flush().await.unwrap();
        outbox.shutdown().await.unwrap();
        let all = reader.await.unwrap();
        assert_eq!(all.len(), taken);
        assert!(all.iter().all(|b| *b == 7));
    }

    #[tokio::test]
    async fn a_large_frame_goes_out_in_fragments_and_arrives_as_one_message() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let ws = WebSocketStream::from_raw_socket(Outbox::new(near), Role::Server, Some(config())).await;
        let mut transport = WsTransport::new(ws);
        let small = Bytes::from(vec![1u8; 100]);
        let large = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        transport.feed(small.clone()).await.unwrap();
        transport.feed(large.clone()).await.unwrap();
        transport.flush().await.unwrap();
        drop(transport);
        let mut raw = Vec::new();
        far.read_to_end(&mut raw).await.unwrap();

        // (FIN, opcode, payload length) of each frame (server frames are not masked).
        let mut frames = Vec::new();
        let mut at = 0;
        while at < raw.len() {
            let (fin, opcode) = (raw[at] & 0x80 != 0, raw[at] & 0x0f);
            let (len, header) = match raw[at + 1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]])), 4),
                127 => panic!("no frame here needs a 64-bit length"),
                n => (usize::from(n), 2),
            };
            frames.push((fin, opcode, len));
            at += header + len;
        }
        assert_eq!(
            frames,
            [(true, 2, 100), (false, 2, FRAGMENT), (false, 0, FRAGMENT), (true, 0, 10_000 - 2 * FRAGMENT)],
            "a frame of at most FRAGMENT bytes whole, a larger one in fragments"
        );

        let mut client = WebSocketStream::from_raw_socket(std::io::Cursor::new(raw), Role::Client, None).await;
        assert_eq!(client.next().await.unwrap().unwrap(), Message::Binary(small));
        assert_eq!(client.next().await.unwrap().unwrap(), Message::Binary(large), "reassembled by the client");
    }

    #[tokio::test]
    async fn a_message_cut_part_way_is_followed_by_the_close_frame_alone() {
        let (near, mut far) = tokio::io::duplex(8 * 1024);
        let ws = WebSocketStream::from_raw_socket(Outbox::new(near), Role::Server, Some(config())).await;
        let mut transport = WsTransport::new(ws);
        // The client reads nothing yet: the message waits part-way, and its write is given up.
        assert!(transport.feed(Bytes::from(vec![7u8; 100 * 1024])).now_or_never().is_none());
        let goaway = transport.feed(Bytes::from_static(b"goaway")).now_or_never().expect("answered at once");
        assert!(goaway.is_err(), "no message inside the cut one");
        far.shutdown().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut raw = Vec::new();
            far.read_to_end(&mut raw).await.unwrap();
            raw
        });
        transport.close(CloseCode::Slow, "too slow").await;
        drop(transport);
        let raw = reader.await.unwrap();

        // (opcode, payload) of each frame: fragments of the one message, then the close.
        let mut frames = Vec::new();
        let mut at = 0;
        while at < raw.len() {
            let (len, header) = match raw[at + 1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]])), 4),
                n => (usize::from(n), 2),
            };
            frames.push((raw[at] & 0x0f, &raw[at + header..at + header + len]));
            at += header + len;
        }
        let opcodes: Vec<u8> = frames.iter().map(|(opcode, _)| *opcode).collect();
        assert_eq!(opcodes[0], 2, "the message's first fragment");
        assert!(opcodes[1..opcodes.len() - 1].iter().all(|&o| o == 0), "then continuations only: {opcodes:?}");
        let (opcode, payload) = frames.last().unwrap();
        assert_eq!(*opcode, 8, "the close frame last");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4001);
        assert_eq!(&payload[2..], b"too slow");
    }
}
