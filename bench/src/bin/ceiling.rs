//! `socketchat-ceiling`: the leanest server that speaks enough of the SocketChat protocol for
//! the `fanout` scenario — the ceiling the real server is measured against (issue: performance).
//!
//! No authentication, no store, no presence, no rate limits, no relay: a WebSocket connection
//! (tokio-tungstenite, 4 KiB read buffer) says `Hello` and gets a `Welcome`, `Join`s rooms and
//! gets `Joined`, and each `Send` gets the room's next seq, an `Ack`, and one `Message` encoded
//! once and handed to every member's bounded queue (a full queue drops the member, as the real
//! server's slow-consumer rule does). Everything else is ignored.
//!
//! Usage: `socketchat-ceiling 127.0.0.1:18500`

use futures_util::{SinkExt, StreamExt};
use socketchat::wire::{
    self, Ack, ChatMessage, ClientFrame, Joined, Limits, MessageKind, ServerFrame, UserRef, Welcome,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Events queued per connection, as the real server's `OUTBOUND_QUEUE`.
const QUEUE: usize = 1024;

#[derive(Default)]
struct Room {
    head: u64,
    members: HashMap<u64, mpsc::Sender<bytes::Bytes>>,
}

type Rooms = Arc<Mutex<HashMap<String, Room>>>;

fn encode(frame: &ServerFrame) -> bytes::Bytes {
    wire::encode_bytes(frame)
}

async fn connection(tcp: tokio::net::TcpStream, id: u64, rooms: Rooms) {
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(QUEUE);
    // Writer: feeds what is queued and flushes when the queue is empty.
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::Binary(first)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Binary(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let user = UserRef { id, username: format!("u{id}") };
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(message)) = stream.next().await {
        let Message::Binary(bytes) = message else { continue };
        let Ok(frame) = wire::decode::<ClientFrame>(&bytes, wire::MAX_CLIENT_FRAME) else { break };
        let reply = match frame {
            ClientFrame::Hello(_) => Some(ServerFrame::Welcome(Welcome {
                version: wire::PROTOCOL_VERSION,
                user: user.clone(),
                connection_id: id,
                heartbeat_ms: wire::HEARTBEAT_MS,
                limits: Limits {
                    max_frame_bytes: wire::MAX_CLIENT_FRAME as u32,
                    max_text_bytes: wire::MAX_TEXT_BYTES as u32,
                    max_rooms: wire::MAX_ROOMS_PER_CONNECTION as u16,
                    max_history_page: wire::MAX_HISTORY_PAGE,
                    sends_per_sec: u16::MAX,
                    send_burst: u16::MAX,
                },
            })),
            ClientFrame::Join(join) => {
                let mut rooms = rooms.lock().unwrap_or_else(|p| p.into_inner());
                let room = rooms.entry(join.room.clone()).or_default();
                room.members.insert(id, tx.clone());
                joined.push(join.room.clone());
                Some(ServerFrame::Joined(Joined { room: join.room, head_seq: room.head, replay_from: room.head + 1 }))
            }
            ClientFrame::Send(send) => {
                let mut rooms = rooms.lock().unwrap_or_else(|p| p.into_inner());
                let room = rooms.entry(send.room.clone()).or_default();
                room.head += 1;
                let seq = room.head;
                let sent_at_ms = socketchat::clock::unix_ms();
                let event = encode(&ServerFrame::Message(ChatMessage {
                    room: send.room.clone(),
                    seq,
                    message_id: seq,
                    sender: user.clone(),
                    client_msg_id: send.client_msg_id,
                    sent_at_ms,
                    text: send.text,
                    kind: MessageKind::Post,
                    target_seq: None,
                    edited_at_ms: None,
                    deleted: false,
                    attachments: Vec::new(),
                }));
                // A member whose queue is full is dropped (it cannot keep up).
                room.members.retain(|_, member| member.try_send(event.clone()).is_ok());
                Some(ServerFrame::Ack(Ack {
                    room: send.room,
                    client_msg_id: send.client_msg_id,
                    seq,
                    message_id: seq,
                    sent_at_ms,
                }))
            }
            _ => None,
        };
        if let Some(reply) = reply
            && tx.send(encode(&reply)).await.is_err()
        {
            break;
        }
    }
    let mut rooms = rooms.lock().unwrap_or_else(|p| p.into_inner());
    for name in joined {
        if let Some(room) = rooms.get_mut(&name) {
            room.members.remove(&id);
        }
    }
    drop(rooms);
    writer.abort();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18500".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("ceiling listening on {}", listener.local_addr()?);
    let rooms: Rooms = Arc::default();
    let next = AtomicU64::new(1);
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(connection(tcp, next.fetch_add(1, Ordering::Relaxed), rooms.clone()));
    }
}
