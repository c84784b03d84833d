//! One greeted connection. Requests wait for their own answer; the other frames that arrive
//! meanwhile are kept, in order and up to a limit, for [`Connection::next_event`].

use crate::link::{Credentials, Endpoint, Link, LinkRx, LinkTx};
use crate::{ClientError, ClientResult};
use socketchat::wire::{
    Ack, ChatMessage, ClientFrame, ClientMsgId, ErrorFrame, Hello, HistoryPage, HistoryRequest, Join, Joined,
    PROTOCOL_VERSION, ServerFrame, Welcome,
};
use std::collections::VecDeque;

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
}

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
        Ok(Self { link, welcome, events, event_limit: MAX_PENDING_EVENTS, dropped: 0, next_request: 1 })
    }

    /// The server's answer to `Hello`: who we are and the limits in force.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends a frame without waiting for anything.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> ClientResult<()> {
        self.link.send(frame).await
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
            None => self.link.recv().await,
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
            match judge(self.link.recv().await?) {
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
        self.link.send(&ClientFrame::Join(Join { room: room.to_owned(), after_seq })).await?;
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
        self.link.send(&frame).await?;
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
        self.link.send(&ClientFrame::History(request)).await?;
        self.wait(|f| match f {
            ServerFrame::History(page) if page.request_id == request_id => Verdict::Answer(page),
            ServerFrame::Error(e) if e.request_id == Some(request_id) => Verdict::Refused(e),
            other => Verdict::Other(other),
        })
        .await
    }

    /// Splits into a sending half and a receiving half (frames already received and not taken
    /// come first from the receiving half's point of view: they are returned with it).
    pub fn split(self) -> (LinkTx, LinkRx, Vec<ServerFrame>) {
        let (tx, rx) = self.link.split();
        (tx, rx, self.events.into())
    }

    /// Ends the connection cleanly.
    pub async fn close(mut self) {
        self.link.close().await;
    }
}
