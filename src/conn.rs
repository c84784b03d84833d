//! The one async connection driver, shared by every transport: it selects over the transport,
//! the connection's signals from the hub (events waiting, a kick, a revocation, the node's
//! shutdown), its sends being committed and its timer, feeds what happens
//! into the session, and carries out the session's actions. Outbound frames are fed as they come
//! and flushed once per turn, so a burst of events costs one write.

use crate::hub::{Event, EventKind, Member, Signals, Topic};
use crate::node::Node;
use crate::presence::{Scope, room_presence};
use crate::session::{Action, Session, replay_range};
use crate::store::{Appended, RoomKind, StoreError, StoreResult};
use crate::wire::ClientMsgId;
use crate::wire::{self, ClientFrame, CloseCode, GoAway, MAX_CLIENT_FRAME, OUTBOUND_QUEUE, ServerFrame, UserRef};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

/// A write that takes longer than this means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for the goodbye (GoAway and close frame) to a peer that is being closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Sends a connection may have waiting for their commit; beyond, its input waits.
const MAX_SENDS_IN_FLIGHT: usize = 64;
/// How long a closing connection waits for the outcome of its sends in flight.
const SENDS_GRACE: Duration = Duration::from_secs(5);
/// A write that did not finish within its deadline.
const TIMED_OUT: &str = "write timed out";
/// How the reason of a slow consumer's disconnect begins.
const SLOW: &str = "slow consumer";
/// Frames that are ready without waiting handled in a turn begun by a frame, beyond that one,
/// before the turn's write; as many are read past an expired lag probe for its answer.
const READ_AHEAD: usize = 16;
/// Events handled per turn before the transport is read again.
const EVENTS_PER_TURN: usize = 256;
/// Probes per allowed lag while a connection is being written to: with the default 10 s, a
/// ping at most every 5 s, so a client that falls behind is closed 10 to 15 s after it did.
const PROBES_PER_LAG: u32 = 2;

/// What a transport read produced.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// One protocol frame's bytes.
    Frame(Bytes),
    /// A WebSocket text message (not allowed).
    Text,
    /// Transport-level traffic (pings): the peer is alive; flush pending control replies.
    Activity,
    /// The answer to a probe (a WebSocket Pong), with its payload.
    Pong(Bytes),
    /// Bytes that cannot be a frame (over the limit, or broken stream framing).
    Malformed(wire::DecodeError),
    /// The transport's own framing broke (a malformed WebSocket frame): no protocol frame can
    /// be trusted any more, the transport closes with its own protocol-error code.
    Broken(String),
    /// The peer closed, or the transport failed.
    Closed(Option<String>),
}

/// What the driver needs from a transport. `recv` must be cancel-safe, also when polled once
/// with a waker that does nothing and dropped (a frame ready without waiting is taken so):
/// its `Pending` must not use up the readiness it waits for.
pub(crate) trait Transport: std::marker::Send {
    /// Whether `probe` queues anything: a transport whose peer answers in order, after reading
    /// everything before it (a WebSocket Ping), tells how far behind reading the peer is.
    const PROBES: bool;
    /// Queues a probe carrying `nonce`, answered by `Inbound::Pong` with it.
    fn probe(&mut self, nonce: [u8; 8]) -> impl Future<Output = Result<(), String>> + std::marker::Send;
    /// Next inbound item.
    fn recv(&mut self) -> impl Future<Output = Inbound> + std::marker::Send;
    /// Queues one encoded frame.
    fn feed(&mut self, frame: Bytes) -> impl Future<Output = Result<(), String>> + std::marker::Send;
    /// Writes everything queued.
    fn flush(&mut self) -> impl Future<Output = Result<(), String>> + std::marker::Send;
    /// Closes with a code and reason (≤ 123 bytes).
    fn close(&mut self, code: CloseCode, reason: &str) -> impl Future<Output = ()> + std::marker::Send;
    /// Closes after `Inbound::Broken`, with the transport's protocol-error code.
    fn abort(&mut self, reason: &str) -> impl Future<Output = ()> + std::marker::Send;
}

/// The sends in flight, in order; allocated only while there are any (an idle connection pays
/// nothing for them).
#[derive(Default)]
struct Sends(Option<FuturesOrdered<PendingSend>>);

impl Sends {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesOrdered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push_back(&mut self, send: PendingSend) {
        self.0.get_or_insert_with(FuturesOrdered::new).push_back(send);
    }

    /// The next outcome, in send order; `None` when nothing is in flight.
    async fn next(&mut self) -> Option<(u64, ClientMsgId, StoreResult<Appended>)> {
        let outcome = self.0.as_mut()?.next().await;
        if self.0.as_ref().is_some_and(FuturesOrdered::is_empty) {
            self.0 = None;
        }
        outcome
    }
}

/// A send being committed: its room, id and outcome.
type PendingSend = Pin<Box<dyn Future<Output = (u64, ClientMsgId, StoreResult<Appended>)> + std::marker::Send>>;

/// What the driver does with one of the session's actions.
enum Step {
    /// Write a frame (most actions).
    Feed(Bytes),
    /// Anything else, boxed.
    Execute(Box<Action>),
}

/// What the driver does after the session took an inbound item.
enum Then {
    /// Nothing more.
    Go,
    /// Flush (the transport queued control replies).
    Flush,
    /// Close with the transport's protocol-error code; the connection ends with this reason.
    Abort(String),
    /// The connection ends with this reason (the peer closed).
    End(String),
}

struct Driver<T> {
    node: Arc<Node>,
    transport: T,
    member: Arc<Member>,
    user: UserRef,
    /// Sends queued to the writer whose outcome has not come back, in the order they were
    /// accepted (their acks go out in that order). The connection keeps reading meanwhile.
    sends: Sends,
    /// Rooms this connection is counted in for presence.
    present_in: HashSet<u64>,
    /// How far behind reading the peer is allowed to fall.
    lag: LagProbe,
}

/// How far behind reading a peer is: while the connection is being written to, a probe goes
/// out with the writes at most every `max_lag / PROBES_PER_LAG`, and one that has not come back
/// within `max_lag` means the peer fell that far behind. Kernel buffers can hold megabytes
/// before a write blocks or the event queue fills, so neither of those bounds the delay alone.
/// The nonce is random: a client cannot answer a probe it has not read.
struct LagProbe {
    /// The probe waiting for its answer: its nonce and when it went out.
    waiting: Option<(u64, Instant)>,
    /// No probe before then.
    next: Instant,
    /// Since when the server has not been reading the connection (its sends in flight are at
    /// the cap): an answer in the socket cannot be seen meanwhile, so the wait does not count.
    paused: Option<Instant>,
}

impl LagProbe {
    fn new(now: Instant) -> Self {
        Self { waiting: None, next: now, paused: None }
    }

    /// Whether the server reads the connection now; the waiting probe's time stops while not.
    /// `now` is read only when that changes.
    fn reading(&mut self, reading: bool, now: impl FnOnce() -> Instant) {
        match (reading, self.paused) {
            (false, None) => self.paused = Some(now()),
            (true, Some(since)) => {
                self.paused = None;
                // (A probe that went out during the pause waited only from then.)
                if let Some((nonce, sent)) = self.waiting {
                    self.waiting = Some((nonce, sent + now().saturating_duration_since(since.max(sent))));
                }
            }
            _ => {}
        }
    }

    /// The nonce of a probe to send with this turn's writes, if one is due.
    fn due(&mut self, now: Instant, max_lag: Duration) -> Option<u64> {
        if self.waiting.is_some() || now < self.next {
            return None;
        }
        let nonce = rand::random();
        self.waiting = Some((nonce, now));
        self.next = now + max_lag / PROBES_PER_LAG;
        Some(nonce)
    }

    /// A probe's answer came back.
    fn answered(&mut self, payload: &[u8]) {
        if self.waiting.is_some_and(|(nonce, _)| payload == nonce.to_be_bytes()) {
            self.waiting = None;
        }
    }

    /// When the probe waiting for its answer has been out for `max_lag` while the server read
    /// the connection; none while it does not.
    fn deadline(&self, max_lag: Duration) -> Option<Instant> {
        self.waiting.filter(|_| self.paused.is_none()).map(|(_, sent)| sent + max_lag)
    }
}

/// Who a connection is, from its verified token.
pub(crate) struct Credentials {
    /// The user.
    pub(crate) user: UserRef,
    /// Token id (revocation closes the connection).
    pub(crate) token_id: String,
    /// Token expiry, Unix seconds (the connection closes then).
    pub(crate) expires_at: u64,
}

/// Runs one authenticated connection to its end. The connection is set up before the returned
/// future starts, and that future works on the driver and session in place: an `async fn`
/// would hold its arguments beside the driver made of them for as long as the connection lives.
pub(crate) fn run<T: Transport>(
    node: Arc<Node>,
    transport: T,
    credentials: Credentials,
) -> impl Future<Output = ()> + std::marker::Send {
    let Credentials { user, token_id, expires_at: token_exp } = credentials;
    let conn_id = node.next_connection_id();
    let member = Arc::new(Member::new(conn_id, user.id, token_id, OUTBOUND_QUEUE));
    node.hub.register(member.clone());
    node.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
    node.metrics.connections_total.fetch_add(1, Ordering::Relaxed);

    let now = Instant::now();
    let token_deadline = now + Duration::from_secs(token_exp.saturating_sub(crate::clock::unix_secs()));
    let mut session = Session::new(user.clone(), conn_id, node.rooms.clone(), now, token_deadline).with_send_rate(
        node.send_burst,
        node.send_rate_per_sec,
        now,
    );
    let lag = LagProbe::new(now);
    let mut driver = Driver { node, transport, member, user, sends: Sends::default(), present_in: HashSet::new(), lag };
    async move {
        let node = driver.node.clone();
        count_presence(&node, &driver.user, &[Scope::Online], true).await;
        tracing::debug!(conn = conn_id, user = %driver.user.username, "connection open");
        let reason = driver.run(&mut session).await;
        tracing::debug!(conn = conn_id, user = %driver.user.username, reason = %reason, "connection closed");

        for room in node.hub.unregister(conn_id, session.room_ids()) {
            node.bus.unsubscribe(room);
        }
        node.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
        let scopes: Vec<Scope> =
            std::iter::once(Scope::Online).chain(driver.present_in.iter().map(|room| Scope::Room(*room))).collect();
        count_presence(&node, &driver.user, &scopes, false).await;
        // Only now answer a client's close: once it sees the reply, it is counted out everywhere.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, driver.transport.flush()).await;
    }
}

/// Counts a connection in or out of presence scopes and announces the transitions, if any.
async fn count_presence(node: &Node, user: &UserRef, scopes: &[Scope], entered: bool) {
    let changed =
        if entered { node.presence.enter(user, scopes).await } else { node.presence.exit(user, scopes).await };
    match changed {
        Ok(transitions) => node.announce(transitions),
        Err(e) => tracing::warn!(error = %e, user = %user.username, "presence not updated"),
    }
}

impl<T: Transport> Driver<T> {
    async fn run(&mut self, session: &mut Session) -> String {
        let sleep = tokio::time::sleep_until(session.poll_timeout().into());
        tokio::pin!(sleep);
        // Frames the client sent together are answered together: in a turn begun by a frame,
        // more that are ready without waiting (read already, or waiting in the socket) are
        // handled before the turn's write, so `Hello` and `Join` sent at once get `Welcome`,
        // `Joined` and the room's presence in one write (and the client one read), not two.
        let mut read_ahead = 0;
        loop {
            let mut wrote = false;
            loop {
                // Frames out (the hot path) are fed in place; the rest (store reads, presence,
                // goodbyes) runs boxed, so that the connection's task is not sized for its
                // largest step for as long as it lives (idle memory). The action itself is
                // gone before anything is awaited, for the same reason.
                let step = match session.poll_action() {
                    None if read_ahead > 0 && self.may_read(session) => {
                        read_ahead -= 1;
                        match self.take_ready(session).await {
                            Some(Ok(())) => {}
                            // The client closed: what this turn answered goes out first.
                            Some(Err(end)) => {
                                if wrote {
                                    let _ = Box::pin(self.flush()).await;
                                }
                                return end;
                            }
                            None => read_ahead = 0,
                        }
                        continue;
                    }
                    None => break,
                    Some(Action::Send(frame)) => Step::Feed(wire::encode_bytes(&frame)),
                    Some(Action::Forward(bytes)) => Step::Feed(bytes),
                    Some(other) => Step::Execute(Box::new(other)),
                };
                let done = match step {
                    Step::Feed(bytes) => self.feed(bytes).await,
                    Step::Execute(action) => Box::pin(self.execute(session, *action)).await,
                };
                match done {
                    Ok(w) => wrote |= w,
                    Err(e) => return Box::pin(self.part(e)).await,
                }
            }
            if wrote && let Err(e) = self.probe_and_flush(session.is_closed()).await {
                return Box::pin(self.part(e)).await;
            }
            if session.is_closed() {
                return "closed by server".into();
            }
            // At the cap of sends in flight, the client's next frames wait in its socket (the
            // answer to a lag probe among them).
            let reading = self.sends.len() < MAX_SENDS_IN_FLIGHT;
            self.lag.reading(reading, Instant::now);
            read_ahead = 0;
            let timeout = session.poll_timeout();
            sleep.as_mut().reset(self.lag.deadline(self.node.max_lag).map_or(timeout, |lag| lag.min(timeout)).into());
            tokio::select! {
                Some((room_id, client_msg_id, result)) = self.sends.next(), if !self.sends.is_empty() => {
                    session.handle_appended(room_id, client_msg_id, result);
                }
                inbound = self.transport.recv(), if reading => {
                    if let Err(end) = self.inbound(session, inbound).await {
                        return end;
                    }
                    read_ahead = READ_AHEAD;
                }
                signals = self.member.signalled() => self.signalled(session, signals),
                () = &mut sleep => {
                    let now = Instant::now();
                    // An answer to the probe already in the socket is read before the lag is
                    // judged (the select takes ready branches in random order).
                    let mut left = READ_AHEAD;
                    while left > 0 && self.lagging(now) && self.may_read(session) {
                        left -= 1;
                        match self.take_ready(session).await {
                            Some(Ok(())) => {}
                            Some(Err(end)) => return end,
                            None => break,
                        }
                    }
                    if self.lagging(now) {
                        self.node.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(user = %self.user.username, "slow consumer: a ping was not answered in time");
                        session.handle_lagging(self.node.max_lag);
                    } else {
                        session.handle_timeout(now);
                    }
                }
            }
            self.gather(session);
        }
    }

    /// Whether the connection's input is read now: not once the session closed, nor while its
    /// sends in flight are at the cap.
    fn may_read(&self, session: &Session) -> bool {
        !session.is_closed() && self.sends.len() < MAX_SENDS_IN_FLIGHT
    }

    /// Whether the waiting probe has been out for the allowed lag at `now`.
    fn lagging(&self, now: Instant) -> bool {
        self.lag.deadline(self.node.max_lag).is_some_and(|deadline| now >= deadline)
    }

    /// Hands the session one inbound item that is ready without waiting, if any (`None`
    /// otherwise, or when the session closed meanwhile). The hub's signals come first, as
    /// between two turns: events waiting are taken between two requests as when each came in
    /// a turn of its own, and a kick or a revocation is not left behind them. `Err` carries
    /// the reason the connection ends.
    async fn take_ready(&mut self, session: &mut Session) -> Option<Result<(), String>> {
        if let Some(signals) = self.member.signalled().now_or_never() {
            self.signalled(session, signals);
            if session.is_closed() {
                return None;
            }
        }
        let inbound = self.transport.recv().now_or_never()?;
        Some(self.inbound(session, inbound).await)
    }

    /// Hands one inbound item to the session and does what else it asks; `Err` carries the
    /// reason the connection ends.
    async fn inbound(&mut self, session: &mut Session, inbound: Inbound) -> Result<(), String> {
        match self.take_inbound(session, inbound) {
            Then::Go => Ok(()),
            then => Box::pin(self.then(then)).await,
        }
    }

    /// Hands one inbound item to the session; what else it asks of the driver (rarely
    /// anything) is done by [`Self::then`].
    fn take_inbound(&mut self, session: &mut Session, inbound: Inbound) -> Then {
        match inbound {
            Inbound::Frame(bytes) => {
                self.node.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
                match wire::decode::<ClientFrame>(&bytes, MAX_CLIENT_FRAME) {
                    Ok(frame) => session.handle_frame(Instant::now(), frame),
                    Err(e) => {
                        tracing::warn!(user = %self.user.username, error = %e, "bad frame");
                        self.node.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                        session.handle_malformed(&e);
                    }
                }
                Then::Go
            }
            Inbound::Text => {
                tracing::warn!(user = %self.user.username, "text message on a binary protocol");
                self.node.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                session.handle_text();
                Then::Go
            }
            Inbound::Malformed(e) => {
                tracing::warn!(user = %self.user.username, error = %e, "malformed input");
                self.node.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                session.handle_malformed(&e);
                Then::Go
            }
            Inbound::Broken(reason) => {
                tracing::warn!(user = %self.user.username, error = %reason, "broken transport framing");
                self.node.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                Then::Abort(reason)
            }
            Inbound::Activity => {
                session.handle_activity(Instant::now());
                Then::Flush
            }
            Inbound::Pong(payload) => {
                session.handle_activity(Instant::now());
                self.lag.answered(&payload);
                Then::Go
            }
            Inbound::Closed(reason) => Then::End(reason.unwrap_or_else(|| "closed by client".into())),
        }
    }

    /// Does what an inbound item asked beyond the session; `Err` carries the reason the
    /// connection ends. (Called boxed: the connection's task is not sized for these.)
    async fn then(&mut self, then: Then) -> Result<(), String> {
        match then {
            Then::Go => Ok(()),
            // The transport's control replies (a Pong) go out now.
            Then::Flush => match self.flush().await {
                Ok(()) => Ok(()),
                Err(e) => Err(self.part(e).await),
            },
            Then::Abort(reason) => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.transport.abort(truncate(&reason, 123))).await;
                Err(reason)
            }
            Then::End(reason) => Err(reason),
        }
    }

    fn signalled(&mut self, session: &mut Session, signals: Signals) {
        if signals.contains(Signals::KICKED) {
            self.node.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(user = %self.user.username, "slow consumer disconnected");
            session.handle_slow();
        } else if signals.contains(Signals::REVOKED) {
            session.handle_revoked();
        } else if signals.contains(Signals::SHUTDOWN) {
            session.handle_shutdown();
        }
        if signals.contains(Signals::EVENTS) {
            self.take_events(session);
        }
    }

    fn take_events(&mut self, session: &mut Session) {
        for event in self.member.take(EVENTS_PER_TURN) {
            session.handle_event(event);
        }
    }

    /// Whatever else is ready without waiting joins this turn, so that it goes out in the same
    /// write: a send's `Ack` and its own `Message` (the writer queues the message just before it
    /// answers the send) cost one write instead of two.
    fn gather(&mut self, session: &mut Session) {
        while !self.sends.is_empty() {
            match self.sends.next().now_or_never() {
                Some(Some((room_id, client_msg_id, result))) => session.handle_appended(room_id, client_msg_id, result),
                _ => break,
            }
        }
        // One lock, whether or not anything is waiting (an empty take allocates nothing).
        self.take_events(session);
    }

    async fn feed(&mut self, bytes: Bytes) -> Result<bool, String> {
        self.node.metrics.frames_out.fetch_add(1, Ordering::Relaxed);
        let written = write(&self.node, &self.member, WRITE_TIMEOUT, std::pin::pin!(self.transport.feed(bytes))).await;
        self.slow_if_stuck(written).map(|()| true)
    }

    async fn flush(&mut self) -> Result<(), String> {
        let written = write(&self.node, &self.member, WRITE_TIMEOUT, std::pin::pin!(self.transport.flush())).await;
        self.slow_if_stuck(written)
    }

    /// Flushes the turn's writes, with a probe of how far behind the peer is when one is due
    /// (not in a goodbye).
    async fn probe_and_flush(&mut self, closing: bool) -> Result<(), String> {
        if T::PROBES
            && !closing
            && let Some(nonce) = self.lag.due(Instant::now(), self.node.max_lag)
        {
            let written = {
                let probe = std::pin::pin!(self.transport.probe(nonce.to_be_bytes()));
                write(&self.node, &self.member, WRITE_TIMEOUT, probe).await
            };
            self.slow_if_stuck(written)?;
        }
        self.flush().await
    }

    /// A write that waited out `WRITE_TIMEOUT` is a peer that stopped reading: a slow consumer
    /// like one whose queue filled, counted and told so (4001) if it still reads.
    fn slow_if_stuck(&self, written: Result<(), String>) -> Result<(), String> {
        match written {
            Err(e) if e == TIMED_OUT => {
                self.node.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(user = %self.user.username, "slow consumer: a write waited 10 s");
                Err(format!("{SLOW}: write timed out"))
            }
            other => other,
        }
    }

    /// The connection ends on a write error. A slow consumer still gets `GoAway` 4001 and the
    /// close frame, best effort within a short deadline: a peer that reads again learns why.
    async fn part(&mut self, error: String) -> String {
        if error.starts_with(SLOW) {
            self.goodbye(CloseCode::Slow, "outbound queue full or not read").await;
        }
        error
    }

    /// Before a goodbye: the sends being committed are answered (acks or errors), within
    /// `SENDS_GRACE`, so a client closed while storing learns what was stored.
    async fn answer_sends(&mut self, session: &mut Session) {
        let deadline = tokio::time::Instant::now() + SENDS_GRACE;
        while let Ok(Some((room_id, client_msg_id, result))) =
            tokio::time::timeout_at(deadline, self.sends.next()).await
        {
            session.handle_appended(room_id, client_msg_id, result);
            while let Some(Action::Send(frame)) = session.poll_action() {
                if self.feed(wire::encode_bytes(&frame)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// `GoAway{code, reason}` then the transport's close, each within `CLOSE_TIMEOUT`.
    async fn goodbye(&mut self, code: CloseCode, reason: &str) {
        let reason = truncate(reason, 123);
        let goaway = ServerFrame::GoAway(GoAway { code: code.code(), reason: reason.to_owned() });
        // Best effort within a short deadline: a peer that stopped reading may never see the
        // reason, but it is disconnected all the same.
        let fed = {
            let frame = std::pin::pin!(self.transport.feed(wire::encode_bytes(&goaway)));
            write(&self.node, &self.member, CLOSE_TIMEOUT, frame).await
        };
        if fed.is_ok() {
            let _ = write(&self.node, &self.member, CLOSE_TIMEOUT, std::pin::pin!(self.transport.flush())).await;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.transport.close(code, reason)).await;
    }

    /// Carries out one action; `Ok(true)` when something was queued for writing.
    async fn execute(&mut self, session: &mut Session, action: Action) -> Result<bool, String> {
        let node = self.node.clone();
        match action {
            Action::Send(frame) => self.feed(wire::encode_bytes(&frame)).await,
            Action::Forward(bytes) => self.feed(bytes).await,
            Action::Resolve { room, lookup } => {
                let found = node.visible_room(&room, self.user.id).await;
                session.handle_resolved(room, lookup, found);
                Ok(false)
            }
            Action::Join { room_id, after_seq } => {
                // Membership and the relay's subscription first, then the head: a message
                // committed after the head was read is published after it, so it reaches the
                // membership live (no gap); the hub delivers the room in seq order from there.
                // A room already live on this node gives its head with the membership (no store
                // read), unless the client has seen past it (another node was ahead of this one
                // by a message in flight): then the store's head, so `head_seq` is never below
                // what the client has.
                let live_head = node.hub.join(room_id, self.member.id);
                let replay: StoreResult<_> = async {
                    node.bus.subscribe(room_id).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    // Membership of a closed room is checked (again) only now that removals
                    // reach this connection: one committed after this read is delivered to it.
                    if node.rooms.by_id(room_id).is_none_or(|r| r.kind != RoomKind::Public)
                        && node.store.role(room_id, self.user.id).await?.is_none()
                    {
                        return Ok(None);
                    }
                    let head = match live_head {
                        Some(head) if after_seq.is_none_or(|after| after <= head) => head,
                        _ => node.store.head_seq(room_id).await?,
                    };
                    node.hub.start(room_id, head);
                    let (from, to) = replay_range(after_seq, head);
                    let messages = if from <= to { node.store.range(room_id, from, to).await? } else { Vec::new() };
                    Ok(Some((head, messages)))
                }
                .await;
                match replay {
                    Ok(None) => session.handle_join_refused(room_id),
                    Ok(Some((head, messages))) => {
                        if self.present_in.insert(room_id) {
                            count_presence(&node, &self.user, &[Scope::Room(room_id)], true).await;
                        }
                        let presence = room_presence(&*node.presence, &node.rooms, room_id).await.unwrap_or_else(|e| {
                            tracing::warn!(error = %e, room = room_id, "room presence not read; sent later");
                            node.hub.owe_presence(room_id, self.member.id);
                            None
                        });
                        let presence = presence.map(|frame| node.hub.joiner_presence(room_id, frame));
                        session.handle_joined(room_id, head, messages, presence);
                    }
                    Err(e) => session.handle_join_failed(room_id, &e),
                }
                Ok(false)
            }
            Action::Leave { room_id } => {
                if node.hub.leave(room_id, self.member.id) {
                    node.bus.unsubscribe(room_id);
                }
                if self.present_in.remove(&room_id) {
                    count_presence(&node, &self.user, &[Scope::Room(room_id)], false).await;
                }
                Ok(false)
            }
            Action::Append(message) => {
                let (room_id, client_msg_id) = (message.room_id, message.client_msg_id);
                // Queued or refused (overload), the answer keeps its place among this
                // connection's sends, and the connection never waits for the writer.
                let outcome = node.writer.submit(message);
                self.sends.push_back(Box::pin(async move {
                    let result = match outcome {
                        Ok(committed) => committed.await,
                        Err(refused) => Err(refused),
                    };
                    (room_id, client_msg_id, result)
                }));
                Ok(false)
            }
            Action::History { request_id, room_id, before_seq, limit } => {
                let result = node.store.page_before(room_id, before_seq, u32::from(limit)).await;
                session.handle_history(request_id, room_id, result);
                Ok(false)
            }
            Action::MarkRead { room_id, seq } => {
                let result = node.store.mark_read(self.user.id, room_id, seq).await;
                if let Ok(last_read_seq) = result {
                    let room = node.rooms.name_of(room_id);
                    node.tell_user(self.user.id, &ServerFrame::ReadState(wire::ReadState { room, last_read_seq }));
                }
                session.handle_marked(room_id, result);
                Ok(false)
            }
            Action::PublishTyping { room_id, frame } => {
                let event = Event {
                    topic: Topic::Room(room_id),
                    kind: EventKind::Typing,
                    from_user: self.user.id,
                    bytes: wire::encode_bytes(&frame),
                };
                node.broadcast(&event);
                Ok(false)
            }
            Action::Close(code, reason) => {
                // A slow consumer is cut at once (PROTOCOL.md § 4.2): its sends in flight get
                // no answer, as when its write was given up.
                if code != CloseCode::Slow {
                    self.answer_sends(session).await;
                }
                self.goodbye(code, &reason).await;
                Ok(false)
            }
        }
    }
}

/// Runs one write under a deadline; a kick from the hub (the peer's queue is full because it
/// stopped reading) cuts a blocked write short instead of letting it wait out the deadline.
/// Most writes complete at once: the deadline's timer is only made (boxed) for one that has to
/// wait, so the connection's task is not sized for a timer it rarely needs.
async fn write<F: Future<Output = Result<(), String>>>(
    node: &Node,
    member: &Member,
    deadline: Duration,
    mut io: Pin<&mut F>,
) -> Result<(), String> {
    let mut kicked = std::pin::pin!(member.kicked());
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = io.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if kicked.as_mut().poll(cx).is_ready() {
            node.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(conn = member.id, "slow consumer disconnected while a write was blocked");
            return Poll::Ready(Err(format!("{SLOW}: outbound queue full")));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(TIMED_OUT.into())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// What a [`Scripted`] transport saw, in order.
    #[derive(Debug)]
    enum Seen {
        /// What was fed since the previous flush.
        Flush(Vec<ServerFrame>),
        /// A probe went out with this nonce.
        Probe([u8; 8]),
        /// An inbound item was taken.
        Taken,
        /// The transport was closed with this code.
        Closed(u16),
    }

    /// A client's transport driven by the test: `inbound` holds what the client sent. A
    /// `recv` that finds it empty waits without a waker, so an item the test adds later is
    /// seen only once something else wakes the connection (what a socket's input racing a
    /// timer looks like). Everything it sees goes to `seen`.
    struct Scripted<const PROBES: bool> {
        inbound: Arc<std::sync::Mutex<VecDeque<Inbound>>>,
        fed: Vec<ServerFrame>,
        seen: tokio::sync::mpsc::UnboundedSender<Seen>,
    }

    impl<const P: bool> Transport for Scripted<P> {
        const PROBES: bool = P;

        async fn probe(&mut self, nonce: [u8; 8]) -> Result<(), String> {
            let _ = self.seen.send(Seen::Probe(nonce));
            Ok(())
        }

        async fn recv(&mut self) -> Inbound {
            let next = self.inbound.lock().unwrap().pop_front();
            match next {
                Some(inbound) => {
                    let _ = self.seen.send(Seen::Taken);
                    inbound
                }
                None => std::future::pending().await,
            }
        }

        async fn feed(&mut self, frame: Bytes) -> Result<(), String> {
            self.fed.push(wire::decode(&frame, usize::MAX).map_err(|e| e.to_string())?);
            Ok(())
        }

        async fn flush(&mut self) -> Result<(), String> {
            if !self.fed.is_empty() {
                let _ = self.seen.send(Seen::Flush(std::mem::take(&mut self.fed)));
            }
            Ok(())
        }

        async fn close(&mut self, code: CloseCode, _: &str) {
            let _ = self.seen.send(Seen::Closed(code.code()));
        }

        async fn abort(&mut self, _: &str) {}
    }

    fn frame(f: &ClientFrame) -> Inbound {
        Inbound::Frame(wire::encode_bytes(f))
    }

    fn hello() -> ClientFrame {
        ClientFrame::Hello(wire::Hello { version: wire::PROTOCOL_VERSION, client: "test".into() })
    }

    /// Starts a connection of alice on `node` over a [`Scripted`] transport whose client sent
    /// `inbound`; returns its input and what its transport sees.
    fn connect<const P: bool>(
        node: &Arc<Node>,
        inbound: Vec<Inbound>,
    ) -> (Arc<std::sync::Mutex<VecDeque<Inbound>>>, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
        let (seen, saw) = tokio::sync::mpsc::unbounded_channel();
        let inbound = Arc::new(std::sync::Mutex::new(VecDeque::from(inbound)));
        let transport = Scripted::<P> { inbound: inbound.clone(), fed: Vec::new(), seen };
        let credentials = Credentials {
            user: UserRef { id: 1, username: "alice".into() },
            token_id: "t".into(),
            expires_at: crate::clock::unix_secs() + 3600,
        };
        tokio::spawn(run(node.clone(), transport, credentials));
        (inbound, saw)
    }

    async fn next(saw: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), saw.recv()).await.expect("in time").expect("open")
    }

    async fn node(tweak: impl FnOnce(&mut crate::config::Config)) -> (crate::server::Running, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::embedded("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        tweak(&mut config);
        (crate::server::start(config).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn frames_sent_together_are_answered_in_one_write() {
        let (running, _dir) = node(|_| {}).await;
        let join = ClientFrame::Join(wire::Join { room: "general".into(), after_seq: None });
        let (_, mut saw) = connect::<false>(running.node(), vec![frame(&hello()), frame(&join)]);
        let first = loop {
            if let Seen::Flush(frames) = next(&mut saw).await {
                break frames;
            }
        };
        let kinds: Vec<&str> = first
            .iter()
            .map(|f| match f {
                ServerFrame::Welcome(_) => "Welcome",
                ServerFrame::Joined(_) => "Joined",
                ServerFrame::RoomPresence(_) => "RoomPresence",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["Welcome", "Joined", "RoomPresence"], "the first write answers both frames");
        running.shutdown().await;
    }

    #[tokio::test]
    async fn a_probe_answer_waiting_when_the_lag_runs_out_is_read_before_the_lag_is_judged() {
        // The answer is in the input when the lag's timer fires, and nothing woke the
        // connection for it: both are ready at once. 20 connections, each a coin toss for a
        // select that takes ready branches in random order.
        let (running, _dir) = node(|c| c.max_lag_ms = 100).await;
        let mut clients = Vec::new();
        for _ in 0..20 {
            let (inbound, mut saw) = connect::<true>(running.node(), vec![frame(&hello())]);
            // The `Hello` is taken, and the probe goes out with the `Welcome`.
            let nonce = loop {
                if let Seen::Probe(nonce) = next(&mut saw).await {
                    break nonce;
                }
            };
            inbound.lock().unwrap().push_back(Inbound::Pong(Bytes::copy_from_slice(&nonce)));
            clients.push(saw);
        }
        for (i, saw) in clients.iter_mut().enumerate() {
            // The answer is taken; a cut would close with 4001 before taking it.
            loop {
                match next(saw).await {
                    Seen::Taken => break,
                    Seen::Closed(code) => panic!("connection {i} closed with {code}: its answer was waiting"),
                    _ => {}
                }
            }
        }
        running.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_cut_for_its_lag_is_cut_at_once_not_after_its_sends_in_flight() {
        // PROTOCOL.md § 4.2: a slow consumer's sends in flight get no answer. Its send is held
        // in the store (another connection holds SQLite's write lock), so an answer would take
        // `SENDS_GRACE` (or the store's 5 s busy timeout) to come.
        let (running, dir) = node(|c| c.max_lag_ms = 100).await;
        let lock = rusqlite::Connection::open(dir.path().join("socketchat.db")).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let join = ClientFrame::Join(wire::Join { room: "general".into(), after_seq: None });
        let send = ClientFrame::Send(wire::Send {
            room: "general".into(),
            client_msg_id: [9; 16],
            text: "held".into(),
            attachments: Vec::new(),
        });
        let started = Instant::now();
        // The probe goes out with the `Welcome` and is never answered.
        let (_, mut saw) = connect::<true>(running.node(), vec![frame(&hello()), frame(&join), frame(&send)]);
        let closed = loop {
            match next(&mut saw).await {
                Seen::Closed(code) => break code,
                Seen::Flush(frames) => assert!(
                    !frames.iter().any(|f| matches!(f, ServerFrame::Ack(_) | ServerFrame::Error(_))),
                    "the held send was answered: {frames:?}"
                ),
                _ => {}
            }
        };
        assert_eq!(closed, CloseCode::Slow.code());
        assert!(
            started.elapsed() < SENDS_GRACE / 2,
            "cut after {:?}: it waited for the send in flight",
            started.elapsed()
        );
        lock.execute_batch("ROLLBACK").unwrap();
        running.shutdown().await;
    }

    #[test]
    fn a_lag_probe_waits_for_its_own_answer_and_goes_out_at_most_every_half_of_the_lag() {
        let (start, lag) = (Instant::now(), Duration::from_secs(10));
        let mut probe = LagProbe::new(start);
        assert_eq!(probe.deadline(lag), None, "nothing waiting: no deadline");
        let nonce = probe.due(start, lag).expect("the first write carries a probe");
        assert_eq!(probe.deadline(lag), Some(start + lag));
        assert_eq!(probe.due(start + Duration::from_secs(5), lag), None, "one waits at a time");
        probe.answered(&nonce.wrapping_add(1).to_be_bytes());
        probe.answered(b"unrelated");
        assert_eq!(probe.deadline(lag), Some(start + lag), "another payload answers nothing");
        probe.answered(&nonce.to_be_bytes());
        assert_eq!(probe.deadline(lag), None);
        assert_eq!(probe.due(start + Duration::from_millis(4999), lag), None, "not before half the lag");
        let later = start + Duration::from_millis(5000);
        let second = probe.due(later, lag).expect("due again");
        assert_ne!(second, nonce, "a new nonce each time");
        assert_eq!(probe.deadline(lag), Some(later + lag));
    }

    #[test]
    fn a_lag_probe_does_not_count_the_time_the_server_is_not_reading() {
        let (start, lag, s) = (Instant::now(), Duration::from_secs(10), Duration::from_secs);
        let mut probe = LagProbe::new(start);
        probe.due(start, lag).expect("a probe goes out");
        probe.reading(true, || unreachable!("nothing changes: the clock is not read"));
        probe.reading(false, || start + s(4));
        assert_eq!(probe.deadline(lag), None, "no deadline while the server does not read");
        probe.reading(false, || unreachable!("still paused"));
        probe.reading(true, || start + s(7));
        assert_eq!(probe.deadline(lag), Some(start + lag + s(3)), "the 3 s paused are not counted");
        // A probe sent while the server is not reading waits from when it went out.
        let mut probe = LagProbe::new(start);
        probe.reading(false, || start);
        probe.due(start + s(2), lag).expect("writes go on while the server does not read");
        probe.reading(true, || start + s(5));
        assert_eq!(probe.deadline(lag), Some(start + s(2) + lag + s(3)));
    }
}
