//! One greeted connection. Requests wait for their own answer; the other frames that arrive
//! meanwhile are kept, in order and up to a limit, for [`Connection::next_event`].

use crate::link::{Credentials, Endpoint, Link, LinkRx, LinkTx};
use crate::{ClientError, ClientResult};
use socketchat::wire::{
    Ack, ChatMessage, ClientFrame, ClientMsgId, ErrorFrame, Hello, HistoryPage, HistoryRequest, Join, Joined,
    PROTOCOL_VERSION, Ping, ServerFrame, Welcome,
};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Frames a connection keeps for [`Connection::next_event`] by default. Beyond, the oldest are
/// dropped (and `next_event` says how many), so an application that only makes requests in a
/// busy room does not pile up the room's messages without bound.
pub const MAX_PENDING_EVENTS: usize = 4096;

/// A connection after `Hello` was answered.
pub struct Connection {
    link: Link,
    welcome: Welcome,
    events: VecDeque<ServerFrame>,
    /// Most frames kept in `events`.
    event_limit: usize,
    /// Frames dropped from `events` since `next_event` last said so.
    dropped: u64,
    next_request: u32,
    /// A `Ping` goes out when nothing was sent for this long (PROTOCOL.md § 6, step 9).
    heartbeat: Duration,
    /// When the last frame was sent.
    last_sent: Instant,
    /// Nonces of the heartbeat `Ping`s not answered yet, oldest first.
    unanswered: VecDeque<u64>,
    /// Heartbeat `Ping`s the server answered.
    answered: u64,
    next_nonce: u64,
}

/// Heartbeat `Ping`s kept waiting for their `Pong` at most; an older one answered late is then
/// an event like any other `Pong`.
const UNANSWERED_KEPT: usize = 8;

/// What a frame is to a waiting request.
enum Verdict<T> {
    /// Its answer.
    Answer(T),
    /// Its refusal.
    Refused(ErrorFrame),
    /// Someone else's: kept for `next_event`.
    Other(ServerFrame),
}

impl Connection {
    /// Connects with `credentials` (a token, for its cookie, or [`Credentials`]), says `Hello`
    /// (version 3) and waits for `Welcome`.
    pub async fn open(
        endpoint: &Endpoint,
        credentials: impl Into<Credentials>,
        client_name: &str,
    ) -> ClientResult<Self> {
        let mut link = Link::open(endpoint, &credentials.into()).await?;
        link.send(&ClientFrame::Hello(Hello { version: PROTOCOL_VERSION, client: client_name.to_owned() })).await?;
        let mut events = VecDeque::new();
        let welcome = loop {
            match link.recv().await? {
                ServerFrame::Welcome(w) => break w,
                ServerFrame::Error(e) => return Err(ClientError::Refused(e)),
                other => events.push_back(other),
            }
        };
        let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_ms.max(1)));
        Ok(Self {
            link,
            welcome,
            events,
            event_limit: MAX_PENDING_EVENTS,
            dropped: 0,
            next_request: 1,
            heartbeat,
            last_sent: Instant::now(),
            unanswered: VecDeque::new(),
            answered: 0,
            // Distinct from a caller's own nonces in practice, so their `Pong`s stay theirs.
            next_nonce: rand::random(),
        })
    }

    /// The server's answer to `Hello`: who we are and the limits in force.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends a frame without waiting for anything.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> ClientResult<()> {
        self.link.send(frame).await?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// How long the connection may send nothing before it sends a `Ping` (the server's
    /// `heartbeat_ms` from `Welcome` by default; the server closes a connection silent for 75 s
    /// with 4003). The `Ping`s go out while the connection waits for a frame (`next_event`, a
    /// request), and their `Pong`s are taken here, not passed on.
    pub fn set_heartbeat(&mut self, every: Duration) {
        self.heartbeat = every.max(Duration::from_millis(1));
    }

    /// Heartbeat `Ping`s the server has answered on this connection.
    pub fn heartbeats_answered(&self) -> u64 {
        self.answered
    }

    /// The next frame from the server, sending heartbeat `Ping`s while it waits and taking
    /// their `Pong`s. Reading is cancel-safe on both transports, so a `Ping` that falls due
    /// stops the read, goes out, and the read starts again where it was; and a caller that
    /// drops this wait while a `Ping` is being written leaves no part of a frame behind
    /// ([`crate::link::LinkTx::send`]).
    async fn recv(&mut self) -> ClientResult<ServerFrame> {
        loop {
            let due = self.last_sent + self.heartbeat;
            let frame = tokio::select! {
                frame = self.link.recv() => frame?,
                () = tokio::time::sleep_until(due) => {
                    let nonce = self.next_nonce;
                    self.next_nonce = nonce.wrapping_add(1);
                    if self.unanswered.len() == UNANSWERED_KEPT {
                        self.unanswered.pop_front();
                    }
                    self.unanswered.push_back(nonce);
                    self.send_frame(&ClientFrame::Ping(Ping { nonce })).await?;
                    continue;
                }
            };
            if let ServerFrame::Pong(Ping { nonce }) = &frame
                && let Some(at) = self.unanswered.iter().position(|n| n == nonce)
            {
                self.unanswered.remove(at);
                self.answered += 1;
                continue;
            }
            return Ok(frame);
        }
    }

    /// How many frames to keep for `next_event` at most (at least 1; [`MAX_PENDING_EVENTS`]
    /// by default).
    pub fn set_event_limit(&mut self, limit: usize) {
        self.event_limit = limit.max(1);
        while self.events.len() > self.event_limit {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        self.events.pop_front();
        self.dropped += 1;
    }

    /// The next frame no request took: live messages, typing, presence, read marks, errors of
    /// frames sent with `send_frame`. If frames were dropped because more than the limit were
    /// waiting, this first fails once with [`ClientError::Dropped`] (reconnectable: join again
    /// from the last seq seen to get the messages back).
    pub async fn next_event(&mut self) -> ClientResult<ServerFrame> {
        if self.dropped > 0 {
            return Err(ClientError::Dropped(std::mem::take(&mut self.dropped)));
        }
        match self.events.pop_front() {
            Some(frame) => Ok(frame),
            None => self.recv().await,
        }
    }

    /// The first frame `wanted` accepts, from those already received or, failing them, from the
    /// connection; every other frame stays, in order, for [`Connection::next_event`]. A
    /// `GoAway` ends the wait as [`ClientError::Closed`].
    pub async fn next_where(&mut self, mut wanted: impl FnMut(&ServerFrame) -> bool) -> ClientResult<ServerFrame> {
        if let Some(frame) = self.events.iter().position(&mut wanted).and_then(|at| self.events.remove(at)) {
            return Ok(frame);
        }
        self.wait(|f| if wanted(&f) { Verdict::Answer(f) } else { Verdict::Other(f) }).await
    }

    /// Frames already received and not yet taken.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Reads until `judge` finds the answer or the refusal; other frames are kept in order.
    async fn wait<T>(&mut self, mut judge: impl FnMut(ServerFrame) -> Verdict<T>) -> ClientResult<T> {
        loop {
            match judge(self.recv().await?) {
                Verdict::Answer(answer) => return Ok(answer),
                Verdict::Refused(e) => return Err(ClientError::Refused(e)),
                Verdict::Other(frame) => {
                    if self.events.len() >= self.event_limit {
                        self.drop_oldest();
                    }
                    self.events.push_back(frame);
                }
            }
        }
    }

    /// Joins a room and returns `Joined` with the replayed messages (`after_seq`: the highest
    /// seq already held; none to start at the head).
    pub async fn join(&mut self, room: &str, after_seq: Option<u64>) -> ClientResult<(Joined, Vec<ChatMessage>)> {
        self.send_frame(&ClientFrame::Join(Join { room: room.to_owned(), after_seq })).await?;
        let joined = self
            .wait(|f| match f {
                ServerFrame::Joined(j) if j.room == room => Verdict::Answer(j),
                ServerFrame::Error(e) if e.room.as_deref() == Some(room) && e.client_msg_id.is_none() => {
                    Verdict::Refused(e)
                }
                other => Verdict::Other(other),
            })
            .await?;
        // The replay follows `Joined` at once, in seq order (PROTOCOL.md § 6.2).
        let mut replay = Vec::new();
        let mut next = joined.replay_from;
        while next <= joined.head_seq {
            let message = self
                .wait(|f| match f {
                    ServerFrame::Message(m) if m.room == room && m.seq == next => Verdict::Answer(m),
                    other => Verdict::Other(other),
                })
                .await?;
            replay.push(message);
            next += 1;
        }
        Ok((joined, replay))
    }

    /// Sends a message (`Send`, `Edit` or `Delete` as `frame`) and waits for its `Ack`; one
    /// attempt, no retry (see [`crate::Client::send`]).
    pub async fn store(&mut self, frame: ClientFrame) -> ClientResult<Ack> {
        let id: ClientMsgId = match &frame {
            ClientFrame::Send(s) => s.client_msg_id,
            ClientFrame::Edit(e) => e.client_msg_id,
            ClientFrame::Delete(d) => d.client_msg_id,
            other => return Err(ClientError::Protocol(format!("{other:?} is not stored"))),
        };
        self.send_frame(&frame).await?;
        self.wait(|f| match f {
            ServerFrame::Ack(a) if a.client_msg_id == id => Verdict::Answer(a),
            ServerFrame::Error(e) if e.client_msg_id == Some(id) => Verdict::Refused(e),
            other => Verdict::Other(other),
        })
        .await
    }

    /// A page of older events (`before_seq`: none for the newest page).
    pub async fn history(&mut self, room: &str, before_seq: Option<u64>, limit: u16) -> ClientResult<HistoryPage> {
        let request_id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        let request = HistoryRequest { request_id, room: room.to_owned(), before_seq, limit };
        self.send_frame(&ClientFrame::History(request)).await?;
        self.wait(|f| match f {
            ServerFrame::History(page) if page.request_id == request_id => Verdict::Answer(page),
            ServerFrame::Error(e) if e.request_id == Some(request_id) => Verdict::Refused(e),
            other => Verdict::Other(other),
        })
        .await
    }

    /// Splits into a sending half and a receiving half (frames already received and not taken
    /// come first from the receiving half's point of view: they are returned with it). The
    /// halves send no heartbeat: a split connection silent for 75 s is closed (4003).
    pub fn split(self) -> (LinkTx, LinkRx, Vec<ServerFrame>) {
        let (tx, rx) = self.link.split();
        (tx, rx, self.events.into())
    }

    /// Ends the connection cleanly.
    pub async fn close(mut self) {
        self.link.close().await;
    }
}
