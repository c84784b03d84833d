//! A client that survives lost connections (PROTOCOL.md § 6.4–6.5, § 4): it reconnects with
//! backoff, joins its rooms again from the last seq it saw, and retries sends with the same
//! `client_msg_id` — so across any number of reconnects it receives every message of its rooms
//! once and in order, and each send is stored once.

use crate::account::Account;
use crate::connection::Connection;
use crate::link::{Credentials, Endpoint};
use crate::{ClientError, ClientResult};
use socketchat::wire::{
    Ack, ChatMessage, ClientFrame, ClientMsgId, CloseCode, Delete, Edit, ErrorCode, ErrorFrame, HistoryPage, Joined,
    MarkRead, Send, ServerFrame,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Longest wait between two reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Attempts to reconnect before a call gives up.
const RECONNECT_ATTEMPTS: u32 = 8;
/// How long after a `Flood` close (4004) the client waits before it connects again
/// (PROTOCOL.md § 4.2: "reconnect after ≥ 10 s").
pub const FLOOD_WAIT: Duration = Duration::from_secs(10);
/// Tries a send makes (rate limits, an unavailable store, reconnects) before giving up.
const SEND_ATTEMPTS: u32 = 20;

/// Which transport [`Client::for_account`] uses, and how it authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket with the `token` cookie.
    WebSocket,
    /// WebTransport with the `token` cookie.
    WebTransport,
    /// WebTransport with a single-use ticket bought for each connection (what a browser does).
    WebTransportTicket,
}

/// Where each (re)connection goes.
enum Target {
    /// The same endpoint every time.
    Fixed(Endpoint, Credentials),
    /// Asked of the server before each connection (`GET /api/transport`).
    Account(Account, Transport),
}

impl Target {
    async fn resolve(&self) -> ClientResult<(Endpoint, Credentials)> {
        match self {
            Target::Fixed(endpoint, credentials) => Ok((endpoint.clone(), credentials.clone())),
            Target::Account(account, transport) => {
                let endpoint = match transport {
                    Transport::WebSocket => account.websocket().await?,
                    Transport::WebTransport | Transport::WebTransportTicket => account
                        .webtransport()
                        .await?
                        .ok_or_else(|| ClientError::Http("the server offers no WebTransport".into()))?,
                };
                let credentials = match transport {
                    Transport::WebTransportTicket => Credentials::Ticket(account.clone()),
                    _ => Credentials::Cookie(account.token.clone()),
                };
                Ok((endpoint, credentials))
            }
        }
    }
}

/// How long to wait before trying again a request the server refused for its rate or an
/// unavailable store (PROTOCOL.md § 4.1: its `retry_after_ms`); none for other refusals.
fn retry_hint(e: &ErrorFrame) -> Option<Duration> {
    (e.code == ErrorCode::RateLimited.code() || e.code == ErrorCode::Unavailable.code())
        .then(|| Duration::from_millis(u64::from(e.retry_after_ms.unwrap_or(1000))))
}

/// The most a `History` page holds (PROTOCOL.md § 5).
const HISTORY_PAGE: u16 = 100;

/// The most messages a join fetches with `History` to fill what its replay left out: 100
/// pages, about 20 s at the server's default rate of requests.
pub const MAX_GAP_FILL: usize = 10_000;

/// Joins `room` on `conn` with everything after `after_seq`. The server replays at most 500
/// messages (`Joined.replay_from > after_seq + 1` when it cut the replay); the messages in
/// between, the newest [`MAX_GAP_FILL`] of them at most, are fetched with `History`, page by
/// page, waiting out the rate limit. For a room the connection has not joined yet (a room
/// joined again continues from what the connection was sent: a later `replay_from` is no cut
/// there). Returns `Joined`, the messages in seq order, and how many missed messages were left
/// out for being beyond the fill's limit.
async fn join_complete(
    conn: &mut Connection,
    room: &str,
    after_seq: Option<u64>,
) -> ClientResult<(Joined, Vec<ChatMessage>, u64)> {
    let (joined, replay) = conn.join(room, after_seq).await?;
    let Some(after) = after_seq.filter(|after| joined.replay_from > after.saturating_add(1)) else {
        return Ok((joined, replay, 0));
    };
    // Pages come newest first, each in ascending order.
    let mut pages: Vec<Vec<ChatMessage>> = Vec::new();
    let (mut taken, mut before) = (0, joined.replay_from);
    while before > after.saturating_add(1) && taken < MAX_GAP_FILL {
        let page = match conn.history(room, Some(before), HISTORY_PAGE).await {
            Ok(page) => page,
            Err(ClientError::Refused(e)) if e.code == ErrorCode::RateLimited.code() => {
                tokio::time::sleep(Duration::from_millis(u64::from(e.retry_after_ms.unwrap_or(1000)))).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(first) = page.messages.first().map(|m| m.seq).filter(|first| *first < before) else { break };
        let page: Vec<ChatMessage> = page.messages.into_iter().filter(|m| m.seq > after).collect();
        taken += page.len();
        pages.push(page);
        before = first;
    }
    // What the limit left out: the seqs between `after` and the oldest message taken.
    let left_out = if before > after.saturating_add(1) { before - after - 1 } else { 0 };
    let mut missed: Vec<ChatMessage> = pages.into_iter().rev().flatten().collect();
    missed.extend(replay);
    Ok((joined, missed, left_out))
}

/// A resilient connection for one account.
pub struct Client {
    target: Target,
    name: String,
    conn: Option<Connection>,
    /// Joined rooms and the highest seq received in each.
    rooms: BTreeMap<String, u64>,
    /// Messages replayed by a resume, not yet handed out.
    replayed: VecDeque<ChatMessage>,
    /// Times a connection had to be made again.
    reconnects: u64,
    /// Rooms found reset on the server (see [`Client::resets`]).
    resets: u64,
    /// Missed messages a join did not fetch (see [`Client::left_out`]).
    left_out: u64,
    /// No new connection before then (after a `Flood` close).
    not_before: Option<tokio::time::Instant>,
}

impl Client {
    /// Connects to `endpoint` with `credentials` (a token, for its cookie, or [`Credentials`]:
    /// with a ticket, every reconnect buys a new one). Every reconnect goes to the same
    /// endpoint: a WebTransport endpoint that pins a generated certificate's hash stops working
    /// when the node restarts, which makes a new certificate (PROTOCOL.md § 1.4); see
    /// [`Client::for_account`].
    pub async fn connect(endpoint: Endpoint, credentials: impl Into<Credentials>, name: &str) -> ClientResult<Self> {
        Self::start(Target::Fixed(endpoint, credentials.into()), name).await
    }

    /// Connects for `account` over `transport`, asking the server where to connect
    /// (`GET /api/transport`) before the first connection and before every reconnect, so a
    /// node's new certificate hash, or a new UDP port, is followed.
    pub async fn for_account(account: &Account, transport: Transport, name: &str) -> ClientResult<Self> {
        Self::start(Target::Account(account.clone(), transport), name).await
    }

    async fn start(target: Target, name: &str) -> ClientResult<Self> {
        let (endpoint, credentials) = target.resolve().await?;
        let conn = Connection::open(&endpoint, credentials, name).await?;
        Ok(Self {
            target,
            name: name.to_owned(),
            conn: Some(conn),
            rooms: BTreeMap::new(),
            replayed: VecDeque::new(),
            reconnects: 0,
            resets: 0,
            left_out: 0,
            not_before: None,
        })
    }

    /// How many times the client had to connect again.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// How many times a room was found reset on the server: joined again, its head was below the
    /// last seq this client had seen (its database was restored from an older backup, or
    /// started anew). The room is then followed from its new head, like a room joined for the
    /// first time (`history` pages what came before), and messages of its old history not yet
    /// handed out are dropped: its seqs no longer mean what they did. A reset is seen only when
    /// the new head is below the last seq seen: a new history that has already grown past it
    /// looks like the old one, and its messages up to that seq are not handed out.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// How many missed messages joins left out: a client away for more than the server's replay
    /// (500) and [`MAX_GAP_FILL`] more gets the newest of them, and pages the rest with
    /// [`Client::history`] if it wants them.
    pub fn left_out(&self) -> u64 {
        self.left_out
    }

    /// The highest seq received in a joined room.
    pub fn last_seq(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).copied()
    }

    /// The live connection, connecting again (and resuming every joined room) when it was lost.
    async fn conn(&mut self) -> ClientResult<&mut Connection> {
        if self.conn.is_none() {
            self.reconnect().await?;
        }
        self.conn.as_mut().ok_or_else(|| ClientError::Lost("no connection".into()))
    }

    async fn reconnect(&mut self) -> ClientResult<()> {
        if let Some(at) = self.not_before.take() {
            tokio::time::sleep_until(at).await;
        }
        let mut delay = Duration::from_millis(100);
        let mut last = None;
        for _ in 0..RECONNECT_ATTEMPTS {
            match self.resume().await {
                Ok(()) => {
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(e) if e.reconnectable() || matches!(e, ClientError::Http(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
            // Jitter spreads many clients that lost one node over time.
            let jitter = Duration::from_millis(rand::random_range(0..=delay.as_millis() as u64 / 2));
            tokio::time::sleep(delay + jitter).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
        Err(last.unwrap_or_else(|| ClientError::Lost("could not reconnect".into())))
    }

    /// A new connection that joins every room again after its last seq; the replay is kept
    /// as events, in order, so nothing missed is lost. A room that is refused as unknown (the
    /// user was removed from it meanwhile) is dropped; a join refused for the rate or an
    /// unavailable store is tried again after the hint.
    async fn resume(&mut self) -> ClientResult<()> {
        let (endpoint, credentials) = self.target.resolve().await?;
        let mut conn = Connection::open(&endpoint, credentials, &self.name).await?;
        let mut replayed = Vec::new();
        let rooms: Vec<(String, u64)> = self.rooms.iter().map(|(room, last)| (room.clone(), *last)).collect();
        for (room, last) in rooms {
            loop {
                match join_complete(&mut conn, &room, Some(last)).await {
                    Ok((joined, replay, left_out)) => {
                        self.left_out += left_out;
                        if joined.head_seq < last {
                            self.rooms.insert(room.clone(), joined.head_seq);
                            self.replayed.retain(|m| m.room != room);
                            self.resets += 1;
                        }
                        replayed.extend(replay);
                        break;
                    }
                    Err(ClientError::Refused(e)) if e.code == ErrorCode::UnknownRoom.code() => {
                        self.rooms.remove(&room);
                        break;
                    }
                    Err(ClientError::Refused(e)) => match retry_hint(&e) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => return Err(ClientError::Refused(e)),
                    },
                    Err(e) => return Err(e),
                }
            }
        }
        self.conn = Some(conn);
        self.replayed.extend(replayed);
        Ok(())
    }

    /// Drops a connection that failed in a way a new one may fix (true), or that sent bytes
    /// that are no frame (false: it is dropped, which closes it, and not made again).
    fn lost(&mut self, error: &ClientError) -> bool {
        if error.reconnectable() {
            self.conn = None;
            if matches!(error, ClientError::Closed { code, .. } if *code == CloseCode::Flood.code()) {
                self.not_before = Some(tokio::time::Instant::now() + FLOOD_WAIT);
            }
            true
        } else {
            if matches!(error, ClientError::Protocol(_)) {
                self.conn = None;
            }
            false
        }
    }

    /// Joins a room: `after_seq` as in PROTOCOL.md § 6.2 (none: start at the head). Returns the
    /// replayed messages; the room is joined again after every reconnect. A room already joined
    /// is left as it is (its messages keep coming through [`Client::next_event`]): nothing is
    /// sent, and nothing returned.
    pub async fn join(&mut self, room: &str, after_seq: Option<u64>) -> ClientResult<Vec<ChatMessage>> {
        if self.rooms.contains_key(room) {
            return Ok(Vec::new());
        }
        loop {
            let result = join_complete(self.conn().await?, room, after_seq).await;
            match result {
                Ok((joined, replay, left_out)) => {
                    self.left_out += left_out;
                    if after_seq.is_some_and(|after| after > joined.head_seq) {
                        self.resets += 1;
                        self.replayed.retain(|m| m.room != room);
                    }
                    let last = replay.last().map_or(joined.head_seq, |m| m.seq).max(after_seq.unwrap_or(0));
                    self.rooms.insert(room.to_owned(), last.min(joined.head_seq));
                    return Ok(replay);
                }
                Err(e) if self.lost(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a message and returns its `Ack`, retrying with the same `client_msg_id` after a
    /// rate limit, an unavailable store or a lost connection (the retry of a send that was
    /// stored gets the original `Ack`).
    pub async fn send(&mut self, room: &str, text: &str, attachments: Vec<u64>) -> ClientResult<Ack> {
        let client_msg_id = rand::random::<ClientMsgId>();
        let frame =
            ClientFrame::Send(Send { room: room.to_owned(), client_msg_id, text: text.to_owned(), attachments });
        self.store(frame).await
    }

    /// Replaces the text of one's own message at `seq`.
    pub async fn edit(&mut self, room: &str, seq: u64, text: &str) -> ClientResult<Ack> {
        let client_msg_id = rand::random::<ClientMsgId>();
        let frame =
            ClientFrame::Edit(Edit { room: room.to_owned(), client_msg_id, target_seq: seq, text: text.to_owned() });
        self.store(frame).await
    }

    /// Deletes one's own message at `seq`.
    pub async fn delete(&mut self, room: &str, seq: u64) -> ClientResult<Ack> {
        let client_msg_id = rand::random::<ClientMsgId>();
        self.store(ClientFrame::Delete(Delete { room: room.to_owned(), client_msg_id, target_seq: seq })).await
    }

    async fn store(&mut self, frame: ClientFrame) -> ClientResult<Ack> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self.conn().await?.store(frame.clone()).await;
            let wait = match result {
                Ok(ack) => return Ok(ack),
                Err(e) if attempts >= SEND_ATTEMPTS => return Err(e),
                Err(e) if self.lost(&e) => Duration::ZERO,
                Err(ClientError::Refused(e)) => match retry_hint(&e) {
                    Some(wait) => wait,
                    None => return Err(ClientError::Refused(e)),
                },
                Err(e) => return Err(e),
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Moves the user's read mark in a joined room (answered by `ReadState` as an event).
    pub async fn mark_read(&mut self, room: &str, seq: u64) -> ClientResult<()> {
        let frame = ClientFrame::MarkRead(MarkRead { room: room.to_owned(), seq });
        let result = self.conn().await?.send_frame(&frame).await;
        if let Err(e) = &result {
            self.lost(e);
        }
        result
    }

    /// A page of older events.
    pub async fn history(&mut self, room: &str, before_seq: Option<u64>, limit: u16) -> ClientResult<HistoryPage> {
        loop {
            let result = self.conn().await?.history(room, before_seq, limit).await;
            match result {
                Err(e) if self.lost(&e) => continue,
                other => return other,
            }
        }
    }

    /// The next event. Messages of joined rooms come once each and in seq order, across
    /// reconnects (a message already seen, replayed again, is skipped).
    pub async fn next_event(&mut self) -> ClientResult<ServerFrame> {
        loop {
            let frame = match self.replayed.pop_front() {
                Some(message) => ServerFrame::Message(message),
                None => {
                    let result = self.conn().await?.next_event().await;
                    match result {
                        Ok(frame) => frame,
                        Err(e) if self.lost(&e) => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            if let ServerFrame::Left(left) = &frame {
                // Left (on request, or removed from the room): not joined again on resume.
                self.rooms.remove(&left.room);
            }
            if let ServerFrame::Message(m) = &frame
                && let Some(last) = self.rooms.get_mut(&m.room)
            {
                if m.seq <= *last {
                    continue;
                }
                *last = m.seq;
            }
            return Ok(frame);
        }
    }

    /// The next message of a joined room (other events are dropped).
    pub async fn next_message(&mut self) -> ClientResult<ChatMessage> {
        loop {
            if let ServerFrame::Message(m) = self.next_event().await? {
                return Ok(m);
            }
        }
    }

    /// Ends the connection cleanly.
    pub async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
    }
}
