//! The servers the scenarios can drive, behind one connection type, so that each scenario's
//! logic and checks are written once: SocketChat itself, `socketchat-ceiling` (the lean
//! WebSocket broadcast server with our protocol), and the Socket.IO reference peer
//! (`bench/peers/socketio`, the system SocketChat replaces) through [`crate::socketio`].
//!
//! What differs between them and matters to the checks: SocketChat and the ceiling give each
//! room consecutive seqs (1, 2, 3… after the head a join reports); the peer's seq is one
//! database sequence for all rooms, so only the order of each sender's own messages can be
//! checked there (see [`Peer::room_seqs`]).

use crate::fanout::BoxError;
use crate::socketio::{SioEvent, SioLink, SioRx, SioTx};
use serde_json::{Value, json};
use socketchat::wire::{self, ClientFrame, ServerFrame};
use socketchat_client::link::{LinkRx, LinkTx};
use socketchat_client::{Connection, Endpoint};
use std::net::SocketAddr;

/// Which server a scenario drives.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// SocketChat: users registered over its REST API, rooms created as channels.
    #[default]
    Socketchat,
    /// `socketchat-ceiling`: no authentication, no store; rooms exist once joined.
    Ceiling,
    /// The Socket.IO peer: tokens minted with the shared JWT secret; rooms exist once joined.
    Socketio,
}

impl Peer {
    /// Whether each room's messages carry consecutive seqs from the head a join reports
    /// (otherwise only each sender's own order can be checked).
    pub fn room_seqs(self) -> bool {
        self != Peer::Socketio
    }

    /// What a receiver's order check covers, for the reports.
    pub fn order_checked(self) -> &'static str {
        if self.room_seqs() { "room seq" } else { "per sender" }
    }
}

/// Where a connection goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// SocketChat or the ceiling.
    Chat(Endpoint),
    /// The Socket.IO peer's HTTP address.
    SocketIo(SocketAddr),
}

impl Target {
    /// The plain WebSocket target of `peer` at `addr` (SocketChat's WebTransport endpoint
    /// needs an account: see `fanout`).
    pub fn websocket(peer: Peer, addr: SocketAddr) -> Self {
        match peer {
            Peer::Socketio => Target::SocketIo(addr),
            Peer::Socketchat | Peer::Ceiling => Target::Chat(Endpoint::WebSocket { url: format!("ws://{addr}/ws") }),
        }
    }
}

/// What a connection receives, as the scenarios see it.
#[derive(Debug)]
pub enum Event {
    /// A message of a room.
    Message(Delivery),
    /// A send was stored: its seq.
    Ack(u64),
    /// A send was refused: why.
    Refused(String),
    /// Anything else (presence, typing, …).
    Other,
}

/// A message as delivered.
#[derive(Debug)]
pub struct Delivery {
    /// Its room.
    pub room: String,
    /// Its seq (per room for SocketChat and the ceiling; the row id for the peer).
    pub seq: u64,
    /// Its text.
    pub text: String,
}

/// An open connection to any peer.
pub enum PeerConnection {
    /// SocketChat or the ceiling, greeted (boxed: it keeps its `Welcome` and queued events).
    Chat(Box<Connection>),
    /// The Socket.IO peer, in the main namespace.
    SocketIo(SioLink),
}

/// The sending half of a [`PeerConnection`].
pub enum PeerTx {
    /// SocketChat or the ceiling.
    Chat(LinkTx),
    /// The Socket.IO peer.
    SocketIo(SioTx),
}

/// The receiving half of a [`PeerConnection`].
pub enum PeerRx {
    /// SocketChat or the ceiling.
    Chat(LinkRx),
    /// The Socket.IO peer.
    SocketIo(SioRx),
}

impl PeerConnection {
    /// Connects with `token` in the `token` cookie.
    pub async fn open(target: &Target, token: &str, client: &str) -> Result<Self, BoxError> {
        Ok(match target {
            Target::Chat(endpoint) => PeerConnection::Chat(Box::new(Connection::open(endpoint, token, client).await?)),
            Target::SocketIo(addr) => PeerConnection::SocketIo(SioLink::connect(*addr, token).await?),
        })
    }

    /// Joins `room` at its head; returns the head seq where the peer has per-room seqs.
    pub async fn join(&mut self, room: &str) -> Result<Option<u64>, BoxError> {
        match self {
            PeerConnection::Chat(conn) => Ok(Some(conn.join(room, None).await?.0.head_seq)),
            PeerConnection::SocketIo(link) => {
                let answer = link.call("join", &[json!(room)]).await?;
                refusal(&answer).map_or(Ok(None), |why| Err(format!("join {room} refused: {why}").into()))
            }
        }
    }

    /// Sends `text` to `room` and waits for the answer: `Ok(Ok(seq))` stored, `Ok(Err(why))`
    /// refused, `Err` the connection is gone.
    pub async fn store(&mut self, room: &str, text: &str) -> Result<Result<u64, String>, BoxError> {
        match self {
            PeerConnection::Chat(conn) => match conn.store(chat_send(room, text)).await {
                Ok(ack) => Ok(Ok(ack.seq)),
                Err(e) if e.reconnectable() => Err(e.into()),
                Err(e) => Ok(Err(e.to_string())),
            },
            PeerConnection::SocketIo(link) => Ok(ack_seq(&link.call("send", &[sio_send(room, text)]).await?)),
        }
    }

    /// Splits into halves two tasks can use at once; events already received come with them.
    pub fn split(self) -> (PeerTx, PeerRx, Vec<Event>) {
        match self {
            PeerConnection::Chat(conn) => {
                let (tx, rx, first) = (*conn).split();
                (PeerTx::Chat(tx), PeerRx::Chat(rx), first.into_iter().map(chat_event).collect())
            }
            PeerConnection::SocketIo(link) => {
                let (tx, rx) = link.split();
                (PeerTx::SocketIo(tx), PeerRx::SocketIo(rx), Vec::new())
            }
        }
    }

    /// Ends the connection cleanly.
    pub async fn close(self) {
        match self {
            PeerConnection::Chat(conn) => (*conn).close().await,
            PeerConnection::SocketIo(link) => link.split().0.close().await,
        }
    }
}

impl PeerTx {
    /// Sends `text` to `room` with a fresh client message id, without waiting for the ack.
    pub async fn send(&mut self, room: &str, text: &str) -> Result<(), BoxError> {
        match self {
            PeerTx::Chat(tx) => Ok(tx.send(&chat_send(room, text)).await?),
            PeerTx::SocketIo(tx) => tx.emit("send", &[sio_send(room, text)], true).await.map(|_| ()),
        }
    }

    /// Ends the connection cleanly.
    pub async fn close(&mut self) {
        match self {
            PeerTx::Chat(tx) => tx.close().await,
            PeerTx::SocketIo(tx) => tx.close().await,
        }
    }
}

impl PeerRx {
    /// The next event; an error means the connection is gone.
    pub async fn recv(&mut self) -> Result<Event, BoxError> {
        match self {
            PeerRx::Chat(rx) => Ok(chat_event(rx.recv().await?)),
            PeerRx::SocketIo(rx) => Ok(match rx.recv().await? {
                SioEvent::Event { name, args } if name == "message" => {
                    let m = args.first().ok_or("message without a body")?;
                    Event::Message(Delivery {
                        room: m["room"].as_str().unwrap_or_default().to_owned(),
                        seq: m["seq"].as_u64().ok_or("message without a seq")?,
                        text: m["text"].as_str().unwrap_or_default().to_owned(),
                    })
                }
                SioEvent::Event { .. } => Event::Other,
                SioEvent::Ack { args, .. } => match ack_seq(&args) {
                    Ok(seq) => Event::Ack(seq),
                    Err(why) => Event::Refused(why),
                },
            }),
        }
    }
}

fn chat_send(room: &str, text: &str) -> ClientFrame {
    ClientFrame::Send(wire::Send {
        room: room.to_owned(),
        client_msg_id: rand::random(),
        text: text.to_owned(),
        attachments: Vec::new(),
    })
}

fn chat_event(frame: ServerFrame) -> Event {
    match frame {
        ServerFrame::Message(m) => Event::Message(Delivery { room: m.room, seq: m.seq, text: m.text }),
        ServerFrame::Ack(a) => Event::Ack(a.seq),
        ServerFrame::Error(e) => Event::Refused(format!("{} {}", e.code, e.message)),
        _ => Event::Other,
    }
}

/// The peer's `send` payload, with a random client message id.
fn sio_send(room: &str, text: &str) -> Value {
    json!({ "room": room, "id": format!("{:032x}", rand::random::<u128>()), "text": text })
}

/// Why an ack (`[{ok, error}]`) says no, if it does.
fn refusal(args: &[Value]) -> Option<String> {
    match args.first() {
        Some(answer) if answer["ok"] == Value::Bool(true) => None,
        Some(answer) => Some(answer["error"].as_str().unwrap_or("refused").to_owned()),
        None => Some("empty ack".to_owned()),
    }
}

/// The seq of a `send` ack, or why it was refused.
fn ack_seq(args: &[Value]) -> Result<u64, String> {
    if let Some(why) = refusal(args) {
        return Err(why);
    }
    args[0]["seq"].as_u64().ok_or_else(|| "ack without a seq (a duplicate)".to_owned())
}
