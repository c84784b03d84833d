//! The per-connection protocol state machine, sans IO: frames and events come in through
//! `handle_*`, work goes out through `poll_action`, time is passed in. The connection driver
//! (`conn.rs`) carries out the actions against the store, hub, bus and transport and reports
//! their results back through `handle_*` again.

use crate::hub::{Event, EventKind};
use crate::rate::TokenBucket;
use crate::rooms::RoomDirectory;
use crate::store::{Appended, NewMessage, Room, RoomKind, StoreError, StoredMessage};
use crate::wire::MessageKind;
use crate::wire::{self, *};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Work for the driver.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Encode and send this frame.
    Send(ServerFrame),
    /// Send these already encoded bytes (a live event).
    Forward(Bytes),
    /// Look a room that is not public (or not cached) up in the store, checking that the user
    /// may see it, and report with `handle_resolved`.
    Resolve {
        /// The room name as the client sent it.
        room: String,
        /// The request waiting for it.
        lookup: Lookup,
    },
    /// Make the connection a member of the room, then read the head and the messages
    /// `replay_range(after_seq, head)` and report them with `handle_joined`.
    Join {
        /// Room id.
        room_id: u64,
        /// The client's last seq.
        after_seq: Option<u64>,
    },
    /// End the room membership.
    Leave {
        /// Room id.
        room_id: u64,
    },
    /// Store a send and report with `handle_appended`.
    Append(NewMessage),
    /// Read a history page and report with `handle_history`.
    History {
        /// Echoed to the client.
        request_id: u32,
        /// Room id.
        room_id: u64,
        /// Upper bound (exclusive).
        before_seq: Option<u64>,
        /// Page size, already clamped.
        limit: u16,
    },
    /// Move the user's read mark and report with `handle_marked`; the new mark reaches all
    /// the user's connections as `ReadState`.
    MarkRead {
        /// Room id.
        room_id: u64,
        /// Highest seq read.
        seq: u64,
    },
    /// Publish this typing frame to the room.
    PublishTyping {
        /// Room id.
        room_id: u64,
        /// The frame other members receive.
        frame: ServerFrame,
    },
    /// Send `GoAway` and close the transport with this code.
    Close(CloseCode, String),
}

/// A request waiting for its room to be looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// `Join`.
    Join(Option<u64>),
    /// `Switch`.
    Switch(Option<u64>),
    /// `History`.
    History {
        /// Echoed to the client.
        request_id: u32,
        /// Upper bound (exclusive).
        before_seq: Option<u64>,
        /// Page size as asked.
        limit: u16,
    },
}

#[derive(Debug)]
enum Membership {
    /// Waiting for the replay: live events are held here. `before`: the highest seq already
    /// sent when the connection was in the room before this join (it stays in the room if the
    /// join fails for want of the store).
    Joining { held: Vec<(u64, Bytes)>, before: Option<u64> },
    /// Replay done: forward live events above `last_seq`.
    Live { last_seq: u64 },
}

/// Seqs a join replays: `(from, to)` inclusive, empty when `from > to`.
pub fn replay_range(after_seq: Option<u64>, head: u64) -> (u64, u64) {
    let from = match after_seq {
        None => head + 1,
        Some(after) => (after.min(head) + 1).max(head.saturating_sub(MAX_REPLAY) + 1),
    };
    (from, head)
}

/// One connection's protocol state.
pub struct Session {
    user: UserRef,
    connection_id: u64,
    rooms: Arc<RoomDirectory>,
    greeted: bool,
    joined: HashMap<u64, Membership>,
    sends: TokenBucket,
    sends_per_sec: u32,
    send_burst: u32,
    typing: TokenBucket,
    reads: TokenBucket,
    marks: TokenBucket,
    rejections: u32,
    /// Sends refused for the rate, with the time their retry is admitted.
    reserved: HashMap<(u64, ClientMsgId), Instant>,
    /// When the current count of rejected requests began (its first refusal); none before the
    /// first.
    rejection_window: Option<Instant>,
    last_rx: Instant,
    token_deadline: Instant,
    closed: bool,
    out: VecDeque<Action>,
}

const FLOOD_WINDOW: Duration = Duration::from_secs(10);
/// Sends a connection may hold a rate-limit reservation for (PROTOCOL.md § 5).
const MAX_RESERVED: usize = 64;
/// A reservation not used this long after its time is given up.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(60);
const HELD_LIMIT: usize = OUTBOUND_QUEUE;

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame {
        code: code.code(),
        message: message.into(),
        room: None,
        client_msg_id: None,
        request_id: None,
        retry_after_ms: None,
    }
}

impl Session {
    /// A session for an authenticated user whose token is valid until `token_deadline`.
    pub fn new(
        user: UserRef,
        connection_id: u64,
        rooms: Arc<RoomDirectory>,
        now: Instant,
        token_deadline: Instant,
    ) -> Self {
        Self {
            user,
            connection_id,
            rooms,
            greeted: false,
            joined: HashMap::new(),
            sends: TokenBucket::new(SEND_BURST, SEND_RATE_PER_SEC, now),
            sends_per_sec: SEND_RATE_PER_SEC,
            send_burst: SEND_BURST,
            typing: TokenBucket::new(TYPING_BURST, TYPING_RATE_PER_SEC, now),
            reads: TokenBucket::new(READ_BURST, READ_RATE_PER_SEC, now),
            marks: TokenBucket::new(MARK_BURST, MARKS_PER_SEC, now),
            rejections: 0,
            reserved: HashMap::new(),
            rejection_window: None,
            last_rx: now,
            token_deadline,
            closed: false,
            out: VecDeque::new(),
        }
    }

    /// Replaces the default send rate limit (the node's configuration).
    pub fn with_send_rate(mut self, burst: u32, per_sec: u32, now: Instant) -> Self {
        self.sends = TokenBucket::new(burst, per_sec, now);
        self.sends_per_sec = per_sec;
        self.send_burst = burst;
        self
    }

    /// Next piece of work, in order. Once all is taken, the queue's memory is released (an
    /// idle connection keeps none; a busy one allocates it once per turn).
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.out.pop_front();
        if action.is_none() && self.out.capacity() > 0 {
            self.out = VecDeque::new();
        }
        action
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Instant {
        (self.last_rx + Duration::from_millis(u64::from(IDLE_TIMEOUT_MS))).min(self.token_deadline)
    }

    /// Whether the session ended (after a `Close` action).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Room ids the connection is a member of (joined or joining).
    pub fn room_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.joined.keys().copied()
    }

    /// The connection's user.
    pub fn user(&self) -> &UserRef {
        &self.user
    }

    fn close(&mut self, code: CloseCode, reason: impl Into<String>) {
        if !self.closed {
            self.closed = true;
            self.out.push_back(Action::Close(code, reason.into()));
        }
    }

    fn reply_error(&mut self, frame: ErrorFrame) {
        self.out.push_back(Action::Send(ServerFrame::Error(frame)));
    }

    /// Bytes arrived that are not a frame.
    pub fn handle_malformed(&mut self, err: &wire::DecodeError) {
        match err {
            DecodeError::TooLarge { .. } => self.close(CloseCode::FrameTooLarge, err.to_string()),
            _ => self.close(CloseCode::BadFrame, err.to_string()),
        }
    }

    /// Any transport-level activity counts as liveness.
    pub fn handle_activity(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// One decoded frame from the client.
    pub fn handle_frame(&mut self, now: Instant, frame: ClientFrame) {
        if self.closed {
            return;
        }
        self.last_rx = now;
        if !self.greeted {
            return match frame {
                ClientFrame::Hello(hello) => self.hello(hello),
                _ => self.close(CloseCode::HelloRequired, "the first frame must be Hello"),
            };
        }
        match frame {
            ClientFrame::Hello(_) => self.reply_error(error(ErrorCode::AlreadyGreeted, "Hello was already sent")),
            ClientFrame::Join(Join { room, after_seq }) => {
                if self.admit_read(now, &room, None) {
                    self.lookup(room, Lookup::Join(after_seq), None);
                }
            }
            ClientFrame::Leave(Leave { room }) => {
                if self.valid_name(&room, None) {
                    match self.joined_room(&room) {
                        Some(room_id) => self.leave(room_id, room),
                        None => self.out.push_back(Action::Send(ServerFrame::Left(Left { room }))),
                    }
                }
            }
            ClientFrame::Switch(Join { room, after_seq }) => {
                if self.admit_read(now, &room, None) {
                    self.lookup(room, Lookup::Switch(after_seq), None);
                }
            }
            ClientFrame::Send(Send { room, client_msg_id, text, attachments }) => {
                self.send(now, room, client_msg_id, (MessageKind::Post, None), text, attachments);
            }
            ClientFrame::Edit(Edit { room, client_msg_id, target_seq, text }) => {
                self.send(now, room, client_msg_id, (MessageKind::Edit, Some(target_seq)), text, Vec::new());
            }
            ClientFrame::Delete(Delete { room, client_msg_id, target_seq }) => {
                self.send(now, room, client_msg_id, (MessageKind::Delete, Some(target_seq)), String::new(), Vec::new());
            }
            ClientFrame::MarkRead(MarkRead { room, seq }) => self.mark_read(now, room, seq),
            ClientFrame::History(HistoryRequest { request_id, room, before_seq, limit }) => {
                if self.admit_read(now, &room, Some(request_id)) {
                    self.lookup(room, Lookup::History { request_id, before_seq, limit }, Some(request_id));
                }
            }
            ClientFrame::Typing(typing) => self.typing(now, typing),
            ClientFrame::Ping(ping) => self.out.push_back(Action::Send(ServerFrame::Pong(ping))),
        }
    }

    fn hello(&mut self, hello: Hello) {
        if hello.version != PROTOCOL_VERSION {
            return self.close(
                CloseCode::UnsupportedVersion,
                format!("protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}", hello.version),
            );
        }
        if hello.client.len() > MAX_CLIENT_NAME_BYTES {
            // PROTOCOL.md § 4.1: a field out of range is `BadRequest`; the connection stays
            // open and still waits for a valid `Hello`.
            return self.reply_error(error(ErrorCode::BadRequest, "client name longer than 64 bytes"));
        }
        self.greeted = true;
        self.out.push_back(Action::Send(ServerFrame::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            user: self.user.clone(),
            connection_id: self.connection_id,
            heartbeat_ms: HEARTBEAT_MS,
            limits: Limits {
                max_frame_bytes: MAX_CLIENT_FRAME as u32,
                max_text_bytes: MAX_TEXT_BYTES as u32,
                max_rooms: MAX_ROOMS_PER_CONNECTION as u16,
                max_history_page: MAX_HISTORY_PAGE,
                sends_per_sec: u16::try_from(self.sends_per_sec).unwrap_or(u16::MAX),
                send_burst: u16::try_from(self.send_burst).unwrap_or(u16::MAX),
            },
        })));
    }

    /// Checks a room name's length, replying `BadRequest` when it is out of range.
    fn valid_name(&mut self, name: &str, context: Option<(Option<ClientMsgId>, Option<u32>)>) -> bool {
        if !name.is_empty() && name.len() <= MAX_ROOM_NAME_BYTES {
            return true;
        }
        self.reply_room_error(ErrorCode::BadRequest, "room name must be 1 to 64 bytes", name, context);
        false
    }

    fn reply_room_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        name: &str,
        context: Option<(Option<ClientMsgId>, Option<u32>)>,
    ) {
        let mut frame = error(code, message);
        frame.room = Some(crate::conn::truncate(name, MAX_ROOM_NAME_BYTES).to_owned());
        if let Some((client_msg_id, request_id)) = context {
            frame.client_msg_id = client_msg_id;
            frame.request_id = request_id;
        }
        self.reply_error(frame);
    }

    /// The id of a room this connection joined (or is joining), by name.
    fn joined_room(&self, name: &str) -> Option<u64> {
        self.rooms.by_name(name).map(|r| r.id).filter(|id| self.joined.contains_key(id))
    }

    /// Finds the room a `Join`, `Switch` or `History` names: a public room known to the node
    /// at once, any other through the store (`Action::Resolve`), which checks that the user
    /// may see it.
    fn lookup(&mut self, room: String, lookup: Lookup, request_id: Option<u32>) {
        if !self.valid_name(&room, Some((None, request_id))) {
            return;
        }
        // A field of the request itself, checked before the room is looked up (§ 4.1).
        if let Lookup::History { request_id, limit: 0, .. } = lookup {
            return self.reply_room_error(
                ErrorCode::BadRequest,
                "limit must be at least 1",
                &room,
                Some((None, Some(request_id))),
            );
        }
        match self.rooms.by_name(&room) {
            Some(known) if known.kind == RoomKind::Public => self.proceed(known.id, room, lookup),
            _ => self.out.push_back(Action::Resolve { room, lookup }),
        }
    }

    /// The store answered a `Resolve`: the room, or `None` when it does not exist or the user
    /// may not see it (both get the same answer, `UnknownRoom`).
    pub fn handle_resolved(&mut self, room: String, lookup: Lookup, found: Result<Option<Arc<Room>>, StoreError>) {
        let request_id = match lookup {
            Lookup::History { request_id, .. } => Some(request_id),
            _ => None,
        };
        match found {
            Ok(Some(found)) => self.proceed(found.id, room, lookup),
            Ok(None) => {
                // A room this connection is in, whose membership has ended (its removal not
                // here yet): out of it, told so after the error (§ 6.2), like a join that finds
                // the removal itself.
                let joined = match lookup {
                    Lookup::Join(_) | Lookup::Switch(_) => {
                        self.rooms.by_name(&room).map(|r| r.id).filter(|id| self.joined.contains_key(id))
                    }
                    Lookup::History { .. } => None,
                };
                match joined {
                    Some(room_id) => self.handle_join_refused(room_id),
                    None => {
                        self.reply_room_error(ErrorCode::UnknownRoom, "no such room", &room, Some((None, request_id)))
                    }
                }
            }
            Err(e) => {
                let mut frame = error(ErrorCode::Unavailable, format!("room lookup failed: {e}"));
                frame.room = Some(room);
                frame.request_id = request_id;
                frame.retry_after_ms = Some(1000);
                self.reply_error(frame);
            }
        }
    }

    fn proceed(&mut self, room_id: u64, room: String, lookup: Lookup) {
        match lookup {
            Lookup::Join(after_seq) => self.join(room_id, room, after_seq),
            Lookup::Switch(after_seq) => {
                let others: Vec<u64> = self.joined.keys().copied().filter(|id| *id != room_id).collect();
                for other in others {
                    let name = self.rooms.name_of(other);
                    self.leave(other, name);
                }
                self.join(room_id, room, after_seq);
            }
            Lookup::History { request_id, before_seq, limit } => self.history(request_id, room_id, before_seq, limit),
        }
    }

    fn join(&mut self, room_id: u64, room: String, after_seq: Option<u64>) {
        if !self.joined.contains_key(&room_id) && self.joined.len() >= MAX_ROOMS_PER_CONNECTION {
            let mut frame = error(ErrorCode::TooManyRooms, "already in 32 rooms; leave one first");
            frame.room = Some(room);
            return self.reply_error(frame);
        }
        // Joined again: continue from what this connection was already sent, so nothing is
        // sent twice (a lower or missing `after_seq`) and nothing in flight is skipped.
        let (after_seq, before) = match self.joined.get(&room_id) {
            Some(Membership::Live { last_seq }) => {
                (Some(after_seq.map_or(*last_seq, |after| after.max(*last_seq))), Some(*last_seq))
            }
            Some(Membership::Joining { before, .. }) => (after_seq, *before),
            None => (after_seq, None),
        };
        self.joined.insert(room_id, Membership::Joining { held: Vec::new(), before });
        self.out.push_back(Action::Join { room_id, after_seq });
    }

    fn leave(&mut self, room_id: u64, room: String) {
        if self.joined.remove(&room_id).is_some() {
            self.out.push_back(Action::Leave { room_id });
        }
        self.out.push_back(Action::Send(ServerFrame::Left(Left { room })));
    }

    /// Counts a rejected request; too many in one window is a flood.
    fn reject(&mut self, now: Instant, frame: ErrorFrame) {
        if self.rejection_window.is_none_or(|first| now.duration_since(first) > FLOOD_WINDOW) {
            self.rejection_window = Some(now);
            self.rejections = 0;
        }
        self.rejections += 1;
        if self.rejections > FLOOD_REJECTIONS {
            return self.close(CloseCode::Flood, "too many rate-limited requests");
        }
        self.reply_error(frame);
    }

    /// Joins, switches and history pages read from the store (a join replays up to 500
    /// messages): they share a rate limit like sends, and a refusal counts toward `Flood`.
    fn admit_read(&mut self, now: Instant, room: &str, request_id: Option<u32>) -> bool {
        let Err(wait) = self.reads.take(now) else {
            return true;
        };
        let mut frame = error(ErrorCode::RateLimited, "too many joins and history requests");
        frame.room = Some(crate::conn::truncate(room, MAX_ROOM_NAME_BYTES).to_owned());
        frame.request_id = request_id;
        frame.retry_after_ms = Some(wait);
        self.reject(now, frame);
        false
    }

    /// A send's place in the rate limit. A send refused for the rate gets a *reservation*: a
    /// token is set aside for it (the bucket goes into debt) and its retry at or after
    /// `retry_after_ms` is admitted on it, without counting as a flood. So a client that
    /// follows the hint is never cut, however many sends it has in flight (each is told a
    /// later time, one token apart). Early retries, and refusals once `MAX_RESERVED` are held,
    /// count toward `Flood`.
    fn admit_send(&mut self, now: Instant, room_id: u64, client_msg_id: ClientMsgId) -> Result<(), (u32, bool)> {
        // A `client_msg_id` is unique per user and room: the same id in another room is
        // another send.
        let key = (room_id, client_msg_id);
        if let Some(at) = self.reserved.get(&key).copied() {
            if now >= at {
                self.reserved.remove(&key);
                return Ok(());
            }
            let early = u32::try_from(at.duration_since(now).as_millis()).unwrap_or(u32::MAX).max(1);
            return Err((early, true));
        }
        let Err(wait) = self.sends.take(now) else {
            return Ok(());
        };
        if self.reserved.len() >= MAX_RESERVED {
            // Reservations a client never came back for expire.
            self.reserved.retain(|_, at| now < *at + RESERVATION_LIFETIME);
        }
        if self.reserved.len() >= MAX_RESERVED {
            return Err((wait, true));
        }
        let wait = self.sends.reserve(now).max(1);
        self.reserved.insert(key, now + Duration::from_millis(u64::from(wait)));
        Err((wait, false))
    }

    /// A `Send`, `Edit` or `Delete`: all three are stored in the room's seq stream, acked,
    /// and share the send rate limit.
    fn send(
        &mut self,
        now: Instant,
        room: String,
        client_msg_id: ClientMsgId,
        (kind, target_seq): (MessageKind, Option<u64>),
        text: String,
        attachments: Vec<u64>,
    ) {
        if !self.valid_name(&room, Some((Some(client_msg_id), None))) {
            return;
        }
        let context = |mut frame: ErrorFrame| {
            frame.room = Some(room.clone());
            frame.client_msg_id = Some(client_msg_id);
            frame
        };
        // A room not joined gets the same answer whether it exists or not.
        let Some(room_id) = self.joined_room(&room) else {
            return self.reply_error(context(error(ErrorCode::NotMember, "join the room before sending")));
        };
        if attachments.len() > MAX_ATTACHMENTS {
            return self.reply_error(context(error(ErrorCode::BadRequest, "at most 10 attachments")));
        }
        if attachments.iter().enumerate().any(|(i, id)| attachments[..i].contains(id)) {
            return self.reply_error(context(error(ErrorCode::BadRequest, "an upload is attached twice")));
        }
        let blank_allowed = kind == MessageKind::Delete || !attachments.is_empty();
        if text.len() > MAX_TEXT_BYTES {
            let why = format!("text is {} bytes; at most {MAX_TEXT_BYTES}", text.len());
            return self.reply_error(context(error(ErrorCode::InvalidText, why)));
        }
        if text.trim().is_empty() && !blank_allowed {
            return self.reply_error(context(error(ErrorCode::InvalidText, "text is empty or only whitespace")));
        }
        if text.contains('\0') {
            // PostgreSQL cannot store it; refused here so it never reaches a shared batch.
            return self.reply_error(context(error(ErrorCode::InvalidText, "text must not contain U+0000")));
        }
        if let Err((wait, counted)) = self.admit_send(now, room_id, client_msg_id) {
            let mut frame = context(error(ErrorCode::RateLimited, "too many sends"));
            frame.retry_after_ms = Some(wait);
            return if counted { self.reject(now, frame) } else { self.reply_error(frame) };
        }
        let mut message = NewMessage::post(room_id, &self.user, client_msg_id, text);
        message.kind = kind;
        message.target_seq = target_seq;
        message.attachments = attachments;
        self.out.push_back(Action::Append(message));
    }

    fn mark_read(&mut self, now: Instant, room: String, seq: u64) {
        if !self.valid_name(&room, None) {
            return;
        }
        let Some(room_id) = self.joined_room(&room) else {
            let mut frame = error(ErrorCode::NotMember, "join the room first");
            frame.room = Some(room);
            return self.reply_error(frame);
        };
        if let Err(wait) = self.marks.take(now) {
            let mut frame = error(ErrorCode::RateLimited, "too many read marks");
            frame.room = Some(room);
            frame.retry_after_ms = Some(wait);
            return self.reject(now, frame);
        }
        self.out.push_back(Action::MarkRead { room_id, seq });
    }

    /// The store answered a `MarkRead` (the new mark itself comes as a live `ReadState`).
    pub fn handle_marked(&mut self, room_id: u64, result: Result<u64, StoreError>) {
        if let Err(e) = result {
            let mut frame = error(ErrorCode::Unavailable, format!("read mark not stored: {e}"));
            frame.room = Some(self.rooms.name_of(room_id));
            frame.retry_after_ms = Some(1000);
            self.reply_error(frame);
        }
    }

    fn history(&mut self, request_id: u32, room_id: u64, before_seq: Option<u64>, limit: u16) {
        let limit = limit.min(MAX_HISTORY_PAGE);
        self.out.push_back(Action::History { request_id, room_id, before_seq, limit });
    }

    fn typing(&mut self, now: Instant, TypingUpdate { room, active }: TypingUpdate) {
        if !self.valid_name(&room, None) {
            return;
        }
        let Some(room_id) = self.joined_room(&room) else {
            let mut frame = error(ErrorCode::NotMember, "join the room first");
            frame.room = Some(room);
            return self.reply_error(frame);
        };
        if let Err(wait) = self.typing.take(now) {
            let mut frame = error(ErrorCode::RateLimited, "too many typing updates");
            frame.room = Some(room);
            frame.retry_after_ms = Some(wait);
            return self.reject(now, frame);
        }
        let frame = ServerFrame::Typing(TypingEvent { room, user: self.user.clone(), active });
        self.out.push_back(Action::PublishTyping { room_id, frame });
    }

    /// The store answered a join: the room's head and the replayed messages (ascending), and
    /// who is online in the room (its `RoomPresence`, encoded; sent once the room is live).
    pub fn handle_joined(&mut self, room_id: u64, head_seq: u64, replay: Vec<StoredMessage>, presence: Option<Bytes>) {
        let Some(membership) = self.joined.get_mut(&room_id) else {
            return;
        };
        let Membership::Joining { held, .. } = std::mem::replace(membership, Membership::Live { last_seq: head_seq })
        else {
            return;
        };
        let room = self.rooms.name_of(room_id);
        let replay_from = replay.first().map_or(head_seq + 1, |m| m.seq);
        self.out.push_back(Action::Send(ServerFrame::Joined(Joined { room, head_seq, replay_from })));
        for m in &replay {
            self.out.push_back(Action::Send(ServerFrame::Message(self.rooms.to_wire(m))));
        }
        let mut last_seq = head_seq;
        for (seq, bytes) in held {
            if seq > last_seq {
                last_seq = seq;
                self.out.push_back(Action::Forward(bytes));
            }
        }
        self.joined.insert(room_id, Membership::Live { last_seq });
        if let Some(presence) = presence {
            self.out.push_back(Action::Forward(presence));
        }
    }

    /// A join could not be completed (store or relay unavailable). A connection that was in
    /// the room before stays in it, live from where it was (what arrived meanwhile follows);
    /// otherwise the membership is dropped.
    pub fn handle_join_failed(&mut self, room_id: u64, err: &StoreError) {
        match self.joined.remove(&room_id) {
            Some(Membership::Joining { held, before: Some(mut last_seq) }) => {
                for (seq, bytes) in held {
                    if seq > last_seq {
                        last_seq = seq;
                        self.out.push_back(Action::Forward(bytes));
                    }
                }
                self.joined.insert(room_id, Membership::Live { last_seq });
            }
            Some(live @ Membership::Live { .. }) => {
                self.joined.insert(room_id, live);
            }
            Some(Membership::Joining { before: None, .. }) => self.out.push_back(Action::Leave { room_id }),
            None => {}
        }
        let mut frame = error(ErrorCode::Unavailable, format!("join failed: {err}"));
        frame.room = Some(self.rooms.name_of(room_id));
        frame.retry_after_ms = Some(1000);
        self.reply_error(frame);
    }

    /// A join found the user is not (or no longer) a member of the private room: the
    /// membership is dropped and the client told the room does not exist (for this user), and,
    /// if the connection was in the room before this join, that it left it.
    pub fn handle_join_refused(&mut self, room_id: u64) {
        let dropped = self.joined.remove(&room_id);
        if dropped.is_some() {
            self.out.push_back(Action::Leave { room_id });
        }
        let name = self.rooms.name_of(room_id);
        self.reply_room_error(ErrorCode::UnknownRoom, "no such room", &name, None);
        if matches!(dropped, Some(Membership::Joining { before: Some(_), .. } | Membership::Live { .. })) {
            self.out.push_back(Action::Send(ServerFrame::Left(Left { room: name })));
        }
    }

    /// The writer answered the send `client_msg_id` to `room_id`.
    pub fn handle_appended(&mut self, room_id: u64, client_msg_id: ClientMsgId, result: Result<Appended, StoreError>) {
        let room = self.rooms.name_of(room_id);
        match result {
            Ok(Appended { message, .. }) => self.out.push_back(Action::Send(ServerFrame::Ack(Ack {
                room,
                client_msg_id: message.client_msg_id,
                seq: message.seq,
                message_id: message.id,
                sent_at_ms: message.sent_at_ms,
            }))),
            Err(err) => {
                let mut frame = error(ErrorCode::Unavailable, format!("send failed ({err}); retry with the same id"));
                if let StoreError::Rejected(why) = err {
                    // The same send would be refused again: terminal, no retry hint.
                    frame.code = ErrorCode::BadRequest.code();
                    frame.message = format!("not stored: {why}");
                } else {
                    frame.retry_after_ms = Some(1000);
                }
                frame.room = Some(room);
                frame.client_msg_id = Some(client_msg_id);
                self.reply_error(frame);
            }
        }
    }

    /// The store answered a history request.
    pub fn handle_history(&mut self, request_id: u32, room_id: u64, result: Result<Vec<StoredMessage>, StoreError>) {
        let room = self.rooms.name_of(room_id);
        match result {
            Ok(page) => {
                let next_before = page.first().map(|m| m.seq).filter(|seq| *seq > 1);
                let messages = page.iter().map(|m| self.rooms.to_wire(m)).collect();
                self.out.push_back(Action::Send(ServerFrame::History(HistoryPage {
                    request_id,
                    room,
                    messages,
                    next_before,
                })));
            }
            Err(err) => {
                let mut frame = error(ErrorCode::Unavailable, format!("history failed: {err}"));
                frame.room = Some(room);
                frame.request_id = Some(request_id);
                frame.retry_after_ms = Some(1000);
                self.reply_error(frame);
            }
        }
    }

    /// A live event from the hub.
    pub fn handle_event(&mut self, event: Event) {
        if self.closed || !self.greeted {
            return;
        }
        let room_id = match event.topic {
            crate::hub::Topic::Everyone => return self.out.push_back(Action::Forward(event.bytes)),
            crate::hub::Topic::Room(id) => id,
        };
        let Some(membership) = self.joined.get_mut(&room_id) else {
            return;
        };
        match (event.kind, membership) {
            (EventKind::Removed, _) => {
                // Removed from the room on some node: out of it at once, joined or joining.
                let name = self.rooms.name_of(room_id);
                self.leave(room_id, name);
            }
            (EventKind::Message { seq }, Membership::Live { last_seq }) => {
                if seq > *last_seq {
                    *last_seq = seq;
                    self.out.push_back(Action::Forward(event.bytes));
                }
            }
            (EventKind::Message { seq }, Membership::Joining { held, .. }) => {
                if held.len() >= HELD_LIMIT {
                    return self.close(CloseCode::Slow, "too many events while joining");
                }
                held.push((seq, event.bytes));
            }
            (_, Membership::Live { .. }) => self.out.push_back(Action::Forward(event.bytes)),
            (_, Membership::Joining { .. }) => {}
        }
    }

    /// Time passed: idle and token-expiry checks.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.token_deadline {
            self.close(CloseCode::Unauthorized, "token expired");
        } else if now.duration_since(self.last_rx) >= Duration::from_millis(u64::from(IDLE_TIMEOUT_MS)) {
            self.close(CloseCode::IdleTimeout, "no frame received for 75 s");
        }
    }

    /// The hub found the outbound queue full.
    pub fn handle_slow(&mut self) {
        self.close(CloseCode::Slow, "outbound queue full");
    }

    /// The client left the transport's ping unanswered for `lag` while it was being written
    /// to: it fell that far behind reading.
    pub fn handle_lagging(&mut self, lag: Duration) {
        self.close(CloseCode::Slow, format!("more than {} ms behind: a ping was not answered", lag.as_millis()));
    }

    /// The connection's token was revoked (logout).
    pub fn handle_revoked(&mut self) {
        self.close(CloseCode::Unauthorized, "token revoked");
    }

    /// The node is shutting down.
    pub fn handle_shutdown(&mut self) {
        self.close(CloseCode::ServerShutdown, "server shutting down");
    }

    /// The client sent a WebSocket text message.
    pub fn handle_text(&mut self) {
        self.close(CloseCode::TextNotSupported, "text messages are not supported; send binary frames");
    }
}

#[cfg(test)]
mod tests;
