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
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message,
    error::{CapacityError, ProtocolError},
};

/// Hard cap tungstenite enforces while reading; frames between `MAX_CLIENT_FRAME` and this are
/// read and refused by the codec with a precise close code.
const MAX_WS_MESSAGE: usize = 64 * 1024;

/// Small read buffer: it is allocated up front per connection (512 B: client frames are small;
/// a larger one is read in more calls, and the buffer grows for it).
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(2 * 1024 * 1024)
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE))
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
    tokio::spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config())).await;
                let credentials = conn::Credentials { user, token_id: claims.jti, expires_at: claims.exp };
                conn::run(node, WsTransport { ws }, credentials).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

struct WsTransport<S> {
    ws: WebSocketStream<S>,
}

impl<S> Transport for WsTransport<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::marker::Send,
{
    async fn recv(&mut self) -> Inbound {
        match self.ws.next().await {
            None => Inbound::Closed(None),
            Some(Ok(Message::Binary(bytes))) => Inbound::Frame(bytes),
            Some(Ok(Message::Text(_))) => Inbound::Text,
            Some(Ok(Message::Close(_))) => Inbound::Closed(None),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Inbound::Activity,
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                Inbound::Malformed(DecodeError::TooLarge { len: size, max: max_size })
            }
            // The peer went without a close frame: a closed connection, not broken framing.
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                Inbound::Closed(Some("connection reset without a close frame".into()))
            }
            Some(Err(e @ (WsError::Protocol(_) | WsError::Utf8(_)))) => Inbound::Broken(e.to_string()),
            Some(Err(e)) => Inbound::Closed(Some(e.to_string())),
        }
    }

    /// Waits for room in the write buffer, then queues the frame: the message is built only
    /// once there is room, so no waiting future holds one (every connection's task is sized
    /// for its largest wait).
    async fn feed(&mut self, frame: Bytes) -> Result<(), String> {
        std::future::poll_fn(|cx| self.ws.poll_ready_unpin(cx)).await.map_err(|e| e.to_string())?;
        self.ws.start_send_unpin(Message::Binary(frame)).map_err(|e| e.to_string())
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
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::marker::Send,
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
            while let Some(Ok(message)) = self.ws.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// How long a closing connection's input is still read, so the close reaches the client.
const CLOSE_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Kept next to the transport so the two limits are read together.
const _: () = assert!(MAX_CLIENT_FRAME < MAX_WS_MESSAGE);
