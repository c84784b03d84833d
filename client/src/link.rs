//! One transport connection carrying frames, authenticated with the `token` cookie:
//! a WebSocket (one binary message per frame, PROTOCOL.md § 1.2) or a WebTransport session's
//! one bidirectional stream (each frame after its varint length, § 1.3–1.4).

use crate::{Account, ClientError, ClientResult};
use futures_util::{SinkExt, StreamExt};
use socketchat::wire::{self, ClientFrame, GoAway, MAX_SERVER_FRAME, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Where a connection goes.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `ws://host:port/ws`.
    WebSocket {
        /// The URL.
        url: String,
    },
    /// `https://host:port/wt`.
    WebTransport {
        /// The URL.
        url: String,
        /// SHA-256 of the certificate to pin (a self-signed one); `None` trusts the usual roots.
        cert_hash: Option<[u8; 32]>,
    },
}

/// How a connection proves who it is (PROTOCOL.md § 1.1, § 1.4).
#[derive(Clone)]
pub enum Credentials {
    /// `Cookie: token=<JWT>` on the WebSocket upgrade or the WebTransport CONNECT: what a native
    /// client sends, over either transport.
    Cookie(String),
    /// A single-use ticket, bought with the account's cookie just before each WebTransport
    /// CONNECT ([`Account::ticket`]) and sent as `?ticket=`: what a browser does, since it sends
    /// no cookie over WebTransport. WebTransport only: the server takes the WebSocket upgrade's
    /// cookie alone, and a WebSocket endpoint with a ticket fails with [`ClientError::Http`].
    Ticket(Account),
}

impl From<&str> for Credentials {
    fn from(token: &str) -> Self {
        Credentials::Cookie(token.to_owned())
    }
}

impl From<&String> for Credentials {
    fn from(token: &String) -> Self {
        Credentials::Cookie(token.clone())
    }
}

/// Names the kind and the user, never the token.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Cookie(_) => f.write_str("Cookie(..)"),
            Credentials::Ticket(account) => write!(f, "Ticket({})", account.username),
        }
    }
}

/// An open transport: its sending and receiving halves.
pub struct Link {
    tx: LinkTx,
    rx: LinkRx,
}

/// The sending half of a [`Link`].
pub enum LinkTx {
    /// WebSocket.
    WebSocket(futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>),
    /// WebTransport: the stream, and the bytes of frames not yet written (a send dropped
    /// halfway leaves the rest of its frame here, written before the next frame).
    WebTransport {
        /// Frames out.
        send: wtransport::SendStream,
        /// Bytes not yet written.
        unsent: Vec<u8>,
    },
}

/// The receiving half of a [`Link`].
pub enum LinkRx {
    /// WebSocket.
    WebSocket(futures_util::stream::SplitStream<WebSocketStream<TcpStream>>),
    /// WebTransport: the stream, the session it keeps open, and bytes not yet a whole frame.
    WebTransport {
        /// Keeps the session open.
        session: wtransport::Connection,
        /// Frames in.
        recv: wtransport::RecvStream,
        /// Bytes read and not yet a whole frame.
        buf: Vec<u8>,
    },
}

fn lost(e: impl std::fmt::Display) -> ClientError {
    ClientError::Lost(e.to_string())
}

impl Link {
    /// Opens a transport to `endpoint`, authenticated with `credentials`.
    pub async fn open(endpoint: &Endpoint, credentials: &Credentials) -> ClientResult<Self> {
        match endpoint {
            Endpoint::WebSocket { url } => {
                let Credentials::Cookie(token) = credentials else {
                    return Err(ClientError::Http("a WebSocket upgrade takes the cookie, not a ticket".into()));
                };
                let mut request = url.as_str().into_client_request().map_err(lost)?;
                let cookie = HeaderValue::from_str(&format!("token={token}")).map_err(lost)?;
                request.headers_mut().insert("cookie", cookie);
                let host = request.uri().authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
                let tcp = TcpStream::connect(&host).await.map_err(lost)?;
                tcp.set_nodelay(true).map_err(lost)?;
                // 8 KiB read buffer (tungstenite's default is 128 KiB): most frames are small,
                // and a generator holds thousands of these.
                let config = WebSocketConfig::default()
                    .read_buffer_size(8 * 1024)
                    .max_message_size(Some(MAX_SERVER_FRAME))
                    .max_frame_size(Some(MAX_SERVER_FRAME));
                let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await.map_err(
                    |e| match e {
                        tokio_tungstenite::tungstenite::Error::Http(r) => {
                            ClientError::Http(format!("upgrade refused: {}", r.status()))
                        }
                        other => lost(other),
                    },
                )?;
                let (tx, rx) = ws.split();
                Ok(Link { tx: LinkTx::WebSocket(tx), rx: LinkRx::WebSocket(rx) })
            }
            Endpoint::WebTransport { url, cert_hash } => {
                let config = wtransport::ClientConfig::builder().with_bind_default();
                let config = match cert_hash {
                    Some(hash) => config.with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(*hash)]),
                    None => config.with_native_certs(),
                }
                .build();
                let endpoint = wtransport::Endpoint::client(config).map_err(lost)?;
                let options = match credentials {
                    Credentials::Cookie(token) => wtransport::endpoint::ConnectOptions::builder(url)
                        .add_header("cookie", format!("token={token}"))
                        .build(),
                    Credentials::Ticket(account) => {
                        let ticket = account.ticket().await?;
                        let mut with_ticket = reqwest::Url::parse(url).map_err(lost)?;
                        with_ticket.query_pairs_mut().append_pair("ticket", &ticket);
                        wtransport::endpoint::ConnectOptions::builder(with_ticket.as_str()).build()
                    }
                };
                let session = endpoint.connect(options).await.map_err(lost)?;
                let (send, recv) = session.open_bi().await.map_err(lost)?.await.map_err(lost)?;
                Ok(Link {
                    tx: LinkTx::WebTransport { send, unsent: Vec::new() },
                    rx: LinkRx::WebTransport { session, recv, buf: Vec::new() },
                })
            }
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> ClientResult<()> {
        self.tx.send(frame).await
    }

    /// The next frame; a `GoAway` ends the connection as [`ClientError::Closed`].
    pub async fn recv(&mut self) -> ClientResult<ServerFrame> {
        self.rx.recv().await
    }

    /// Splits into halves that two tasks can use at once (a sender that does not wait for
    /// its acks, and a reader).
    pub fn split(self) -> (LinkTx, LinkRx) {
        (self.tx, self.rx)
    }

    /// Ends the connection cleanly (a close frame, or the end of the stream).
    pub async fn close(&mut self) {
        self.tx.close().await;
    }
}

impl LinkTx {
    /// Sends one frame. Dropping this future never leaves part of a frame on the wire: over
    /// WebSocket a frame goes whole or not at all; over WebTransport the rest of a frame begun
    /// is written before the next one (each write of the stream is cancel-safe).
    pub async fn send(&mut self, frame: &ClientFrame) -> ClientResult<()> {
        let bytes = wire::encode(frame);
        match self {
            LinkTx::WebSocket(tx) => tx.send(Message::Binary(bytes.into())).await.map_err(lost),
            LinkTx::WebTransport { send, unsent } => {
                wire::put_stream_frame(unsent, &bytes);
                wire::write_unsent(send, unsent).await.map_err(lost)
            }
        }
    }

    /// Ends the sending side: a WebSocket close frame, or the end of the stream.
    pub async fn close(&mut self) {
        match self {
            LinkTx::WebSocket(tx) => {
                let _ = SinkExt::close(tx).await;
            }
            LinkTx::WebTransport { send, unsent } => {
                if wire::write_unsent(send, unsent).await.is_ok() {
                    let _ = send.finish().await;
                }
            }
        }
    }
}

impl LinkRx {
    /// The next frame; a `GoAway` ends the connection as [`ClientError::Closed`].
    pub async fn recv(&mut self) -> ClientResult<ServerFrame> {
        let frame = match self {
            LinkRx::WebSocket(rx) => loop {
                match rx.next().await {
                    Some(Ok(Message::Binary(bytes))) => break decode(&bytes)?,
                    Some(Ok(Message::Close(frame))) => {
                        return Err(match frame {
                            Some(f) => ClientError::Closed { code: u16::from(f.code), reason: f.reason.to_string() },
                            None => lost("closed without a code"),
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(lost(e)),
                    None => return Err(lost("connection ended")),
                }
            },
            LinkRx::WebTransport { recv, buf, .. } => loop {
                if let Some((used, frame)) = wire::decode_stream_frame(buf, MAX_SERVER_FRAME)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
                {
                    let frame = decode(frame)?;
                    buf.drain(..used);
                    break frame;
                }
                let mut chunk = [0u8; 16 * 1024];
                match recv.read(&mut chunk).await.map_err(lost)? {
                    Some(n) => buf.extend_from_slice(&chunk[..n]),
                    None => return Err(lost("stream ended")),
                }
            },
        };
        match frame {
            ServerFrame::GoAway(GoAway { code, reason }) => Err(ClientError::Closed { code, reason }),
            other => Ok(other),
        }
    }
}

fn decode(bytes: &[u8]) -> ClientResult<ServerFrame> {
    wire::decode(bytes, MAX_SERVER_FRAME).map_err(|e| ClientError::Protocol(e.to_string()))
}
