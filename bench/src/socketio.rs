//! A Socket.IO v4 client, just enough to drive the reference peer (`bench/peers/socketio`)
//! with the same scenarios as SocketChat.
//!
//! Engine.IO v4 on the WebSocket transport only (no long-polling first): one text frame per
//! Engine.IO packet, whose first character is its type — `0` open (with the session's JSON),
//! `1` close, `2` ping (answered with `3` pong), `4` message. A message carries a Socket.IO
//! packet, again typed by its first character — `0` connect (to a namespace), `1` disconnect,
//! `2` event, `3` ack, `4` connect error — then an optional `/namespace,`, an optional ack id
//! (digits), and a JSON array (`["name", args…]` for an event, `[args…]` for an ack). Binary
//! packets are not used by the peer and not supported here.
//!
//! [`decode`] and [`encode_event`] are pure; [`SioLink`] moves them over tokio-tungstenite.
//! The receiving half answers the server's pings itself, through the sending half's sink,
//! so a connection that is only read stays open.

use crate::fanout::BoxError;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Ws = WebSocketStream<TcpStream>;
/// The sending half, shared by the sender and the reader (which answers pings).
type Sink = Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>;

/// One decoded Engine.IO packet, with the Socket.IO packet inside a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// Engine.IO open: the session (`sid`, `pingInterval`, …).
    Open(Value),
    /// Engine.IO close.
    Close,
    /// Engine.IO ping: the client must answer with a pong.
    Ping,
    /// Engine.IO pong (or anything else of no interest: noop, upgrade).
    Other,
    /// Socket.IO connect accepted (`{"sid": …}`).
    Connect(Value),
    /// Socket.IO connect refused (`{"message": …}`): the handshake middleware said no.
    ConnectError(Value),
    /// Socket.IO disconnect: the server ended the namespace session.
    Disconnect,
    /// An event: its name and arguments, and the ack id the sender wants an answer to.
    Event {
        /// Event name.
        name: String,
        /// Arguments after the name.
        args: Vec<Value>,
        /// Ack id requested, if any.
        ack: Option<u64>,
    },
    /// An answer to one of our events.
    Ack {
        /// The id we sent.
        id: u64,
        /// What the server's handler passed to its callback.
        args: Vec<Value>,
    },
}

/// Decodes one WebSocket text frame.
pub fn decode(text: &str) -> Result<Packet, BoxError> {
    let mut chars = text.chars();
    match chars.next() {
        Some('0') => return Ok(Packet::Open(serde_json::from_str(chars.as_str())?)),
        Some('1') => return Ok(Packet::Close),
        Some('2') => return Ok(Packet::Ping),
        Some('4') => {}
        Some(_) => return Ok(Packet::Other),
        None => return Err("empty Engine.IO packet".into()),
    }
    let kind = chars.next().ok_or("empty Socket.IO packet")?;
    let mut rest = chars.as_str();
    // Our namespace is the main one ("/"), which is written without a prefix.
    if rest.starts_with('/') {
        rest = rest.split_once(',').map_or("", |(_, after)| after);
    }
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let id = if digits > 0 { Some(rest[..digits].parse::<u64>()?) } else { None };
    let json = &rest[digits..];
    let value =
        || -> Result<Value, BoxError> { Ok(if json.is_empty() { Value::Null } else { serde_json::from_str(json)? }) };
    Ok(match kind {
        '0' => Packet::Connect(value()?),
        '1' => Packet::Disconnect,
        '2' => {
            let Value::Array(mut args) = value()? else { return Err("event without an array".into()) };
            if args.is_empty() {
                return Err("event without a name".into());
            }
            let Value::String(name) = args.remove(0) else { return Err("event name is not a string".into()) };
            Packet::Event { name, args, ack: id }
        }
        '3' => {
            let Value::Array(args) = value()? else { return Err("ack without an array".into()) };
            Packet::Ack { id: id.ok_or("ack without an id")?, args }
        }
        '4' => Packet::ConnectError(value()?),
        other => return Err(format!("unsupported Socket.IO packet type {other}").into()),
    })
}

/// The text frame of an event `name(args…)`, asking for an ack with `ack` if given.
pub fn encode_event(name: &str, args: &[Value], ack: Option<u64>) -> String {
    let mut array = Vec::with_capacity(args.len() + 1);
    array.push(Value::String(name.to_owned()));
    array.extend(args.iter().cloned());
    let id = ack.map(|id| id.to_string()).unwrap_or_default();
    format!("42{id}{}", Value::Array(array))
}

/// What the receiving half hands out.
#[derive(Debug)]
pub enum SioEvent {
    /// An event from the server.
    Event {
        /// Event name.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
    /// The answer to an event we sent with an ack id.
    Ack {
        /// Our id.
        id: u64,
        /// The answer's arguments.
        args: Vec<Value>,
    },
}

/// A connected Socket.IO client: Engine.IO opened, the main namespace joined.
pub struct SioLink {
    tx: SioTx,
    rx: SioRx,
}

/// The sending half: events, with ack ids counted from 1.
pub struct SioTx {
    sink: Sink,
    next_ack: u64,
}

/// The receiving half: events and acks; answers pings on its own.
pub struct SioRx {
    stream: SplitStream<Ws>,
    sink: Sink,
}

impl SioLink {
    /// Connects to `ws://addr/socket.io/?EIO=4&transport=websocket` with the `token` cookie and
    /// joins the main namespace; a refusal by the server's handshake middleware is an error.
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Self, BoxError> {
        let mut request = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket").into_client_request()?;
        request.headers_mut().insert("cookie", HeaderValue::from_str(&format!("token={token}"))?);
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        // A small read buffer, as the other scenarios' clients: tungstenite's default of
        // 128 KiB per connection makes the generator's memory grow with connections.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
        let (sink, stream) = ws.split();
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        let mut rx = SioRx { stream, sink: sink.clone() };
        match rx.packet().await? {
            Packet::Open(_) => {}
            other => return Err(format!("expected the Engine.IO open packet, got {other:?}").into()),
        }
        sink.lock().await.send(Message::text("40")).await?;
        loop {
            match rx.packet().await? {
                Packet::Connect(_) => break,
                Packet::ConnectError(e) => return Err(format!("connection refused: {e}").into()),
                Packet::Close | Packet::Disconnect => return Err("closed during the handshake".into()),
                _ => {}
            }
        }
        Ok(Self { tx: SioTx { sink, next_ack: 1 }, rx })
    }

    /// Emits `name(args…)` and waits for its ack; events that come meanwhile are dropped.
    pub async fn call(&mut self, name: &str, args: &[Value]) -> Result<Vec<Value>, BoxError> {
        let id = self.tx.emit(name, args, true).await?.unwrap_or(0);
        loop {
            if let SioEvent::Ack { id: got, args } = self.rx.recv().await?
                && got == id
            {
                return Ok(args);
            }
        }
    }

    /// Splits into a sending and a receiving half that two tasks can use at once.
    pub fn split(self) -> (SioTx, SioRx) {
        (self.tx, self.rx)
    }
}

impl SioTx {
    /// Emits `name(args…)`; with `ack`, returns the id its answer will carry.
    pub async fn emit(&mut self, name: &str, args: &[Value], ack: bool) -> Result<Option<u64>, BoxError> {
        let id = ack.then(|| {
            self.next_ack += 1;
            self.next_ack - 1
        });
        self.sink.lock().await.send(Message::text(encode_event(name, args, id))).await?;
        Ok(id)
    }

    /// Closes the WebSocket.
    pub async fn close(&mut self) {
        let _ = self.sink.lock().await.close().await;
    }
}

impl SioRx {
    /// The next packet, pings answered.
    async fn packet(&mut self) -> Result<Packet, BoxError> {
        loop {
            let text = match self.stream.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => return Err("connection closed".into()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            };
            match decode(text.as_str())? {
                Packet::Ping => self.sink.lock().await.send(Message::text("3")).await?,
                packet => return Ok(packet),
            }
        }
    }

    /// The next event or ack; the server closing or disconnecting us is an error.
    pub async fn recv(&mut self) -> Result<SioEvent, BoxError> {
        loop {
            match self.packet().await? {
                Packet::Event { name, args, .. } => return Ok(SioEvent::Event { name, args }),
                Packet::Ack { id, args } => return Ok(SioEvent::Ack { id, args }),
                Packet::Close | Packet::Disconnect => return Err("disconnected by the server".into()),
                Packet::ConnectError(e) => return Err(format!("refused: {e}").into()),
                Packet::Open(_) | Packet::Connect(_) | Packet::Ping | Packet::Other => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_engine_io_packets() {
        assert_eq!(
            decode(r#"0{"sid":"a","pingInterval":25000}"#).unwrap(),
            Packet::Open(json!({"sid":"a","pingInterval":25000}))
        );
        assert_eq!(decode("2").unwrap(), Packet::Ping);
        assert_eq!(decode("3").unwrap(), Packet::Other);
        assert_eq!(decode("1").unwrap(), Packet::Close);
        assert!(decode("").is_err());
    }

    #[test]
    fn decodes_socket_io_packets() {
        assert_eq!(decode(r#"40{"sid":"x"}"#).unwrap(), Packet::Connect(json!({"sid":"x"})));
        assert_eq!(
            decode(r#"44{"message":"unauthorized"}"#).unwrap(),
            Packet::ConnectError(json!({"message":"unauthorized"}))
        );
        assert_eq!(decode("41").unwrap(), Packet::Disconnect);
        assert_eq!(
            decode(r#"42["message",{"seq":7}]"#).unwrap(),
            Packet::Event { name: "message".into(), args: vec![json!({"seq":7})], ack: None }
        );
        assert_eq!(
            decode(r#"4212["join","general"]"#).unwrap(),
            Packet::Event { name: "join".into(), args: vec![json!("general")], ack: Some(12) }
        );
        assert_eq!(
            decode(r#"4317[{"ok":true,"seq":3}]"#).unwrap(),
            Packet::Ack { id: 17, args: vec![json!({"ok":true,"seq":3})] }
        );
        // Another namespace's prefix is skipped.
        assert_eq!(decode(r#"43/admin,5[1]"#).unwrap(), Packet::Ack { id: 5, args: vec![json!(1)] });
        assert!(decode("43[1]").is_err(), "an ack needs an id");
        assert!(decode("42[]").is_err(), "an event needs a name");
    }

    #[test]
    fn encodes_events_with_and_without_ack() {
        assert_eq!(encode_event("join", &[json!("general")], Some(1)), r#"421["join","general"]"#);
        assert_eq!(encode_event("send", &[json!({"room":"r"})], None), r#"42["send",{"room":"r"}]"#);
        let text = encode_event("send", &[json!({"text":"a\"b"})], Some(42));
        assert_eq!(
            decode(&text).unwrap(),
            Packet::Event { name: "send".into(), args: vec![json!({"text":"a\"b"})], ack: Some(42) }
        );
    }
}
