//! Node-local fan-out: which connections are in which room. Events arrive encoded once; every
//! recipient gets a clone of the same `Bytes`. A recipient whose queue is full is marked slow
//! and kicked instead of growing memory (G6).
//!
//! Each room with local members is also delivered **in seq order without gaps** (G4), whatever
//! order the relay brings messages in: the room knows the next seq it expects, holds back a
//! message that arrives early, and drops one it already delivered. `repair` (a task per node)
//! fills a gap from the store once it has lasted `GAP_HOLD`, and compares every room's head
//! with the store periodically and after the relay reconnected, so a message whose publish was
//! lost (relay down, or a node that died between commit and publish) is delivered all the same.

use crate::rooms::RoomDirectory;
use crate::store::{RoomKind, Store, StoredMessage};
use crate::wire::{RoomPresence, ServerFrame};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::task::AtomicWaker;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Who an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Members of one room.
    Room(u64),
    /// Every connection of the node (revocations).
    Everyone,
}

/// Kind of event, which decides how a session treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A stored message with its seq (ordered, replayable).
    Message {
        /// Position in the room.
        seq: u64,
    },
    /// Typing: ephemeral, not sent back to the typist's own connections.
    Typing,
    /// A room's presence: from the relay or this node, a transition (`bytes` empty) that marks
    /// the room for a refresh; to members, the room's encoded `RoomPresence`.
    Presence,
    /// A token was revoked (logout): `bytes` holds its id; the user's connections that
    /// authenticated with it are closed. Never forwarded.
    Revoke,
    /// `from_user` was removed from the room: their connections joined to it leave it.
    Removed,
    /// A frame for every connection of `from_user` (their read marks, rooms they were added
    /// to), whatever rooms they joined.
    ToUser,
}

/// One encoded event on its way to members.
#[derive(Debug, Clone)]
pub struct Event {
    /// Recipients.
    pub topic: Topic,
    /// What it is.
    pub kind: EventKind,
    /// User who caused it.
    pub from_user: u64,
    /// The encoded `ServerFrame`.
    pub bytes: Bytes,
}

/// What a connection's task was woken for: bits of [`Member::signalled`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals(u8);

impl Signals {
    /// Events are waiting (take them with [`Member::take`]).
    pub const EVENTS: Signals = Signals(1);
    /// The hub found the queue full: the connection is a slow consumer.
    pub const KICKED: Signals = Signals(2);
    /// The connection's token was revoked.
    pub const REVOKED: Signals = Signals(4);
    /// The node is shutting down.
    pub const SHUTDOWN: Signals = Signals(8);

    /// Whether `other` is among these.
    pub fn contains(self, other: Signals) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One connection as the hub sees it.
#[derive(Debug)]
pub struct Member {
    /// Connection id.
    pub id: u64,
    /// Authenticated user.
    pub user_id: u64,
    /// Id of the token the connection authenticated with.
    pub token_id: String,
    /// Events waiting for the connection, at most `capacity`. A plain locked deque rather than a
    /// channel: when the connection has taken everything, the queue holds no memory at all
    /// (a channel keeps a block of slots per connection for as long as it lives).
    queue: Mutex<VecDeque<Event>>,
    capacity: usize,
    slow: AtomicBool,
    /// Raised [`Signals`] not yet taken by the connection's task.
    signals: AtomicU8,
    /// The connection's task, woken when a signal is raised. One waker that stays registered
    /// rather than a waiter per signal: a turn of the connection registers nothing with a lock
    /// and unregisters nothing afterwards.
    waker: AtomicWaker,
}

impl Member {
    /// A member whose queue holds up to `capacity` events.
    pub fn new(id: u64, user_id: u64, token_id: String, capacity: usize) -> Self {
        Self {
            id,
            user_id,
            token_id,
            queue: Mutex::new(VecDeque::new()),
            capacity,
            slow: AtomicBool::new(false),
            signals: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn signal(&self, signals: Signals) {
        self.signals.fetch_or(signals.0, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Completes with the signals raised since it last completed, and takes them.
    pub fn signalled(&self) -> impl Future<Output = Signals> + '_ {
        self.take_signals(Signals(u8::MAX))
    }

    /// Completes once the hub found this member's queue full, and takes that signal only: a
    /// write blocked on the peer waits for it beside the write. The kick is taken once, by
    /// this or by [`Member::signalled`], so the goodbye written afterwards is not cut short.
    pub fn kicked(&self) -> impl Future<Output = ()> + '_ {
        self.take_signals(Signals::KICKED).map(drop)
    }

    /// Completes with those of `wanted` that are raised, and takes them (others stay raised).
    fn take_signals(&self, wanted: Signals) -> impl Future<Output = Signals> + '_ {
        let take = move || Signals(self.signals.fetch_and(!wanted.0, Ordering::AcqRel) & wanted.0);
        std::future::poll_fn(move |cx| {
            let raised = take();
            if raised != Signals::default() {
                return Poll::Ready(raised);
            }
            self.waker.register(cx.waker());
            match take() {
                none if none == Signals::default() => Poll::Pending,
                raised => Poll::Ready(raised),
            }
        })
    }

    /// Takes up to `max` waiting events, oldest first. When it takes them all, the queue's
    /// memory goes with them (and a raised `EVENTS` with them: the task is not woken for
    /// events it already took); when some remain, `EVENTS` is raised again.
    pub fn take(&self, max: usize) -> VecDeque<Event> {
        let mut queue = self.queue();
        if queue.len() <= max {
            // Under the lock: an event offered after this take raises it again.
            self.signals.fetch_and(!Signals::EVENTS.0, Ordering::AcqRel);
            return std::mem::take(&mut *queue);
        }
        let rest = queue.split_off(max);
        let taken = std::mem::replace(&mut *queue, rest);
        drop(queue);
        self.signal(Signals::EVENTS);
        taken
    }

    fn offer(&self, event: &Event) {
        if self.slow.load(Ordering::Relaxed) {
            return;
        }
        let mut queue = self.queue();
        if queue.len() >= self.capacity {
            drop(queue);
            self.slow.store(true, Ordering::Release);
            self.signal(Signals::KICKED);
            return;
        }
        queue.push_back(event.clone());
        let first = queue.len() == 1;
        drop(queue);
        if first {
            self.signal(Signals::EVENTS);
        }
    }
}

/// How long a room waits for a missing seq to arrive over the relay before reading it from the
/// store. Relayed messages of two nodes can overtake each other by a few milliseconds.
pub const GAP_HOLD: Duration = Duration::from_millis(100);
/// How often every room's head is compared with the store.
pub const HEAD_CHECK: Duration = Duration::from_secs(1);
/// Least time between two `RoomPresence` frames of a room that differ in the count only (users
/// beyond the first page came or went): large rooms change all the time, and nobody needs
/// their count more often than this.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(5);
/// Messages a room holds back while it waits for a gap to fill; later ones are dropped and
/// read from the store by the repair.
const EARLY_LIMIT: usize = 4096;
/// Most messages the repair reads from the store for one room in one go.
const REPAIR_BATCH: u64 = 500;

/// One room on this node: its members and where its ordered stream stands.
#[derive(Debug, Default)]
struct RoomState {
    members: HashMap<u64, Arc<Member>>,
    /// The next seq to deliver; `None` until the first join read the room's head.
    next: Option<u64>,
    /// Messages that arrived before `next` (held back), by seq.
    early: BTreeMap<u64, Event>,
    /// When the oldest gap opened.
    gap_since: Option<Instant>,
    /// The room's presence changed since it was last read.
    presence_changed: bool,
    /// When its presence was last read to be sent.
    presence_read: Option<Instant>,
    /// The last `RoomPresence` sent to its members, and when.
    presence_sent: Option<(Instant, RoomPresence)>,
    /// Members that joined when the room's presence could not be read: they get the next
    /// frame even when it shows the others nothing new.
    presence_owed: Vec<u64>,
    /// The last `RoomPresence` a joining connection was sent, encoded: the next joiners share
    /// it while it stays the same (in a busy room most joins change the count only now and
    /// then, and the first page rarely).
    joiner_presence: Option<(RoomPresence, Bytes)>,
}

impl RoomState {
    fn fan_out(&self, event: &Event) {
        for member in self.members.values() {
            member.offer(event);
        }
    }

    /// Delivers `event` (a message with `seq`) in order, or holds it back.
    fn order(&mut self, seq: u64, event: &Event, now: Instant) -> bool {
        let Some(next) = self.next else {
            self.hold(seq, event);
            return false;
        };
        if seq < next {
            return false;
        }
        if seq > next {
            self.hold(seq, event);
            self.gap_since.get_or_insert(now);
            return true;
        }
        self.fan_out(event);
        self.advance(seq + 1, now);
        false
    }

    fn hold(&mut self, seq: u64, event: &Event) {
        if self.early.len() < EARLY_LIMIT || self.early.contains_key(&seq) {
            self.early.insert(seq, event.clone());
        }
    }

    /// Moves `next` to `next_seq` and releases whatever became contiguous.
    fn advance(&mut self, next_seq: u64, now: Instant) {
        let mut next = next_seq.max(self.next.unwrap_or(0));
        while let Some(entry) = self.early.first_entry() {
            let seq = *entry.key();
            if seq < next {
                entry.remove();
            } else if seq == next {
                let event = entry.remove();
                self.fan_out(&event);
                next += 1;
            } else {
                break;
            }
        }
        self.next = Some(next);
        self.gap_since = if self.early.is_empty() { None } else { Some(self.gap_since.unwrap_or(now)) };
    }
}

/// Rooms → members, plus everyone on the node.
#[derive(Debug, Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// Wakes the repair task: a gap opened, or the relay asks for a re-sync.
    repair: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    rooms: HashMap<u64, RoomState>,
    everyone: HashMap<u64, Arc<Member>>,
    /// Set when the relay lost events: every room's head is checked at once.
    resync: bool,
    /// Set once the node began shutting down.
    closing: bool,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connection to the node (it starts receiving `Everyone` events).
    pub fn register(&self, member: Arc<Member>) {
        let mut inner = self.lock();
        if inner.closing {
            member.signal(Signals::SHUTDOWN);
        }
        inner.everyone.insert(member.id, member);
    }

    /// The node is shutting down: every connection, and any that registers from now on, is
    /// signalled `SHUTDOWN`.
    pub fn shut_down(&self) {
        let mut inner = self.lock();
        inner.closing = true;
        for member in inner.everyone.values() {
            member.signal(Signals::SHUTDOWN);
        }
    }

    /// Removes a connection from the node and from these rooms; returns the rooms that have
    /// no local member left (the relay can stop sending them).
    pub fn unregister(&self, member_id: u64, rooms: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut inner = self.lock();
        inner.everyone.remove(&member_id);
        rooms.into_iter().filter(|room| Self::remove(&mut inner, *room, member_id)).collect()
    }

    /// Makes a registered connection a member of a room (from now on it receives its events).
    /// Returns the last seq the room delivered on this node, when its stream is already live
    /// here: every later seq reaches the new member, and every seq up to it is stored.
    pub fn join(&self, room: u64, member_id: u64) -> Option<u64> {
        let mut inner = self.lock();
        let member = inner.everyone.get(&member_id).cloned()?;
        let state = inner.rooms.entry(room).or_default();
        state.members.insert(member_id, member);
        state.next.map(|next| next - 1)
    }

    /// Tells a room where its stream stands when nobody on the node knew yet: `head` was read
    /// from the store after the first member joined, so every later seq reaches the room.
    pub fn start(&self, room: u64, head: u64) {
        let mut inner = self.lock();
        if let Some(state) = inner.rooms.get_mut(&room)
            && state.next.is_none()
        {
            state.advance(head + 1, Instant::now());
        }
    }

    /// Ends a room membership; `true` when the room has no local member left.
    pub fn leave(&self, room: u64, member_id: u64) -> bool {
        Self::remove(&mut self.lock(), room, member_id)
    }

    fn remove(inner: &mut Inner, room: u64, member_id: u64) -> bool {
        if let Some(state) = inner.rooms.get_mut(&room) {
            state.members.remove(&member_id);
            if state.members.is_empty() {
                inner.rooms.remove(&room);
                return true;
            }
        }
        false
    }

    /// Whether the room has members on this node (the relay subscribes to it).
    pub fn wants(&self, room: u64) -> bool {
        self.lock().rooms.contains_key(&room)
    }

    /// Hands an event to every recipient's queue without waiting; a room's messages go out in
    /// seq order.
    pub fn deliver(&self, event: &Event) {
        let mut inner = self.lock();
        let members = match event.topic {
            Topic::Everyone => &inner.everyone,
            Topic::Room(room) => match inner.rooms.get_mut(&room) {
                None => return,
                Some(state) => match event.kind {
                    EventKind::Message { seq } => {
                        if state.order(seq, event, Instant::now()) {
                            drop(inner);
                            self.repair.notify_one();
                        }
                        return;
                    }
                    EventKind::Presence => {
                        state.presence_changed = true;
                        return;
                    }
                    _ => &state.members,
                },
            },
        };
        for member in members.values() {
            match event.kind {
                EventKind::Typing if member.user_id == event.from_user => {}
                EventKind::Removed | EventKind::ToUser if member.user_id != event.from_user => {}
                EventKind::Revoke => {
                    if member.user_id == event.from_user && member.token_id.as_bytes() == &event.bytes[..] {
                        member.signal(Signals::REVOKED);
                    }
                }
                _ => member.offer(event),
            }
        }
    }

    /// The relay lost events (it reconnected): check every room against the store now, and
    /// send every room's presence again.
    pub fn resync(&self) {
        let mut inner = self.lock();
        inner.resync = true;
        for state in inner.rooms.values_mut() {
            state.presence_changed = true;
        }
        drop(inner);
        self.repair.notify_one();
    }

    /// Marks a room's presence as changed (it is read and sent again).
    pub fn mark_presence(&self, room: u64) {
        if let Some(state) = self.lock().rooms.get_mut(&room) {
            state.presence_changed = true;
        }
    }

    /// `frame`, the `RoomPresence` for a connection that joined `room`, encoded: once for all
    /// the joiners it is the same for.
    pub fn joiner_presence(&self, room: u64, frame: RoomPresence) -> Bytes {
        let kept = self.lock().rooms.get(&room).and_then(|state| {
            state.joiner_presence.as_ref().filter(|(kept, _)| *kept == frame).map(|(_, bytes)| bytes.clone())
        });
        if let Some(bytes) = kept {
            return bytes;
        }
        // Encoded outside the hub's lock, which every delivery takes.
        let frame = ServerFrame::RoomPresence(frame);
        let bytes = crate::wire::encode_bytes(&frame);
        if let ServerFrame::RoomPresence(frame) = frame {
            // The frame it replaces is freed after the lock is released.
            let _replaced = self
                .lock()
                .rooms
                .get_mut(&room)
                .and_then(|state| state.joiner_presence.replace((frame, bytes.clone())));
        }
        bytes
    }

    /// The member joined `room` and its `RoomPresence` could not be read: it gets the next
    /// one read, whatever the others had.
    pub fn owe_presence(&self, room: u64, member_id: u64) {
        if let Some(state) = self.lock().rooms.get_mut(&room)
            && state.members.contains_key(&member_id)
        {
            state.presence_changed = true;
            if !state.presence_owed.contains(&member_id) {
                state.presence_owed.push(member_id);
            }
        }
    }

    /// Rooms whose presence changed and whose last `RoomPresence` is at least `interval` old:
    /// they count as sent now.
    pub fn presence_due(&self, now: Instant, interval: Duration) -> Vec<u64> {
        let mut inner = self.lock();
        let mut due = Vec::new();
        for (room, state) in &mut inner.rooms {
            if state.presence_changed && state.presence_read.is_none_or(|read| now >= read + interval) {
                state.presence_changed = false;
                state.presence_read = Some(now);
                due.push(*room);
            }
        }
        due
    }

    /// Hands a room's `RoomPresence`, encoded once, to its members on this node, unless it
    /// shows nothing new. When only the count changed (the listed users did not), it goes out
    /// once `COUNT_INTERVAL` has passed since the room's last frame; until then the room stays
    /// marked and is read again. Members owed a frame (`owe_presence`) get this one in any
    /// case. Returns whether it went to all the room's members.
    pub fn deliver_presence(&self, room: u64, frame: RoomPresence, now: Instant) -> bool {
        let mut inner = self.lock();
        let Some(state) = inner.rooms.get_mut(&room) else {
            return false;
        };
        let owed = std::mem::take(&mut state.presence_owed);
        let event = || Event {
            topic: Topic::Room(room),
            kind: EventKind::Presence,
            from_user: 0,
            bytes: crate::wire::encode_bytes(&ServerFrame::RoomPresence(frame.clone())),
        };
        let nothing_new = match &state.presence_sent {
            Some((_, last)) if *last == frame => true,
            Some((at, last)) if last.users == frame.users && now < *at + COUNT_INTERVAL => {
                state.presence_changed = true;
                true
            }
            _ => false,
        };
        if nothing_new {
            if !owed.is_empty() {
                let event = event();
                owed.iter().filter_map(|id| state.members.get(id)).for_each(|member| member.offer(&event));
            }
            return false;
        }
        state.fan_out(&event());
        state.presence_sent = Some((now, frame));
        true
    }

    /// Number of connections on the node.
    pub fn connections(&self) -> usize {
        self.lock().everyone.len()
    }

    /// Gaps to read from the store now: `(room, from, to)` for rooms whose oldest gap is older
    /// than `GAP_HOLD`; and the earliest time another one falls due.
    fn due_gaps(&self, now: Instant) -> (Vec<(u64, u64, u64)>, Option<Instant>) {
        let inner = self.lock();
        let mut due = Vec::new();
        let mut later: Option<Instant> = None;
        for (room, state) in &inner.rooms {
            let (Some(next), Some(since), Some(first)) = (state.next, state.gap_since, state.early.keys().next())
            else {
                continue;
            };
            if now >= since + GAP_HOLD {
                due.push((*room, next, first - 1));
            } else {
                let at = since + GAP_HOLD;
                later = Some(later.map_or(at, |l| l.min(at)));
            }
        }
        (due, later)
    }

    /// Rooms to compare with the store: `(room, next)`; clears the re-sync request.
    fn streams(&self) -> Vec<(u64, u64)> {
        let mut inner = self.lock();
        inner.resync = false;
        inner.rooms.iter().filter_map(|(room, s)| s.next.map(|next| (*room, next))).collect()
    }

    /// The distinct users with connections in each room of the node.
    fn users_by_room(&self) -> Vec<(u64, Vec<u64>)> {
        let inner = self.lock();
        inner
            .rooms
            .iter()
            .map(|(room, state)| {
                let mut users: Vec<u64> = state.members.values().map(|m| m.user_id).collect();
                users.sort_unstable();
                users.dedup();
                (*room, users)
            })
            .collect()
    }

    fn resync_requested(&self) -> bool {
        self.lock().resync
    }
}

impl crate::bus::Inbox for Hub {
    fn handle_event(&self, event: Event) {
        self.deliver(&event);
    }

    fn handle_resync(&self) {
        self.resync();
    }

    fn wants(&self, room: u64) -> bool {
        Hub::wants(self, room)
    }
}

/// The event of a stored message, encoded once.
pub fn message_event(rooms: &RoomDirectory, m: &StoredMessage) -> Event {
    Event {
        topic: Topic::Room(m.room_id),
        kind: EventKind::Message { seq: m.seq },
        from_user: m.sender_id,
        bytes: crate::wire::encode_bytes(&crate::wire::ServerFrame::Message(rooms.to_wire(m))),
    }
}

/// Reads `from..=to` of a room from the store and delivers it (in batches).
async fn fill(hub: &Hub, store: &dyn Store, rooms: &RoomDirectory, room: u64, from: u64, to: u64) -> bool {
    let mut from = from;
    while from <= to {
        let upto = to.min(from + REPAIR_BATCH - 1);
        match store.range(room, from, upto).await {
            Ok(messages) => {
                for m in &messages {
                    hub.deliver(&message_event(rooms, m));
                }
                if messages.len() as u64 != upto - from + 1 {
                    tracing::warn!(room, from, to = upto, got = messages.len(), "store returned a short range");
                    return false;
                }
            }
            Err(e) => {
                tracing::warn!(room, error = %e, "cannot fill a gap from the store; retrying");
                return false;
            }
        }
        from = upto + 1;
    }
    true
}

/// How often every closed room's local members are checked against the store, whatever the
/// relay did: a removal whose event was lost on the publishing side (a full queue, a failed
/// publish) takes effect within this time.
pub const MEMBERSHIP_CHECK: Duration = Duration::from_secs(30);

/// Takes out of its closed rooms every local connection whose user is no longer a member, as
/// the `Removed` event would have (after the relay lost events, and every
/// `MEMBERSHIP_CHECK`). One read of each closed room's members. Returns `false` when the store
/// failed (the check is repeated soon).
async fn revalidate(hub: &Hub, store: &dyn Store, rooms: &RoomDirectory) -> bool {
    for (room, users) in hub.users_by_room() {
        if rooms.by_id(room).is_some_and(|r| r.kind == RoomKind::Public) {
            continue;
        }
        let members: std::collections::HashSet<u64> = match store.members(room).await {
            Ok(members) => members.into_iter().map(|(id, _, _)| id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "memberships not re-checked; retrying");
                return false;
            }
        };
        for user in users.into_iter().filter(|u| !members.contains(u)) {
            tracing::info!(room, user, "membership gone without its event; removing");
            hub.deliver(&Event {
                topic: Topic::Room(room),
                kind: EventKind::Removed,
                from_user: user,
                bytes: Bytes::new(),
            });
        }
    }
    true
}

/// The node's repair task: fills gaps that outlast `GAP_HOLD`, and every `HEAD_CHECK` (and at
/// once after a relay reconnect) delivers whatever the store has beyond each room's stream.
/// Runs until the hub is dropped by everyone else.
pub async fn repair(hub: Arc<Hub>, store: Arc<dyn Store>, rooms: Arc<RoomDirectory>, head_check: Duration) {
    let mut next_check = Instant::now() + head_check;
    let mut next_membership_check = Instant::now() + MEMBERSHIP_CHECK;
    let mut filled = 0u64;
    while Arc::strong_count(&hub) > 1 {
        let now = Instant::now();
        let (due, later) = hub.due_gaps(now);
        for (room, from, to) in due {
            if fill(&hub, &*store, &rooms, room, from, to).await {
                filled += to - from + 1;
                tracing::debug!(room, from, to, filled, "gap filled from the store");
            }
        }
        let resync = hub.resync_requested();
        if resync || now >= next_membership_check {
            next_membership_check =
                if revalidate(&hub, &*store, &rooms).await { now + MEMBERSHIP_CHECK } else { now + head_check };
        }
        if now >= next_check || resync {
            next_check = now + head_check;
            let streams = hub.streams();
            if !streams.is_empty() {
                let ids: Vec<u64> = streams.iter().map(|(room, _)| *room).collect();
                let next_of: HashMap<u64, u64> = streams.into_iter().collect();
                match store.heads(&ids).await {
                    Ok(heads) => {
                        for (room, head) in heads {
                            let next = next_of.get(&room).copied().unwrap_or(head + 1);
                            if head >= next {
                                tracing::debug!(room, from = next, to = head, "head check: delivering from the store");
                                fill(&hub, &*store, &rooms, room, next, head).await;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "head check failed"),
                }
            }
        }
        let wake = later.map_or(next_check, |l| l.min(next_check)).min(next_membership_check);
        tokio::select! {
            () = hub.repair.notified() => {}
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::Arc;

    #[test]
    fn joining_a_live_room_gives_the_last_seq_it_delivered() {
        let hub = Hub::default();
        let (a, b) = (Arc::new(Member::new(1, 10, "t1".into(), 8)), Arc::new(Member::new(2, 20, "t2".into(), 8)));
        hub.register(a.clone());
        hub.register(b.clone());
        assert_eq!(hub.join(5, 1), None, "not live yet: the head comes from the store");
        hub.start(5, 7);
        hub.deliver(&event(Topic::Room(5), EventKind::Message { seq: 8 }, 10));
        // Seq 10 is held back (9 is missing): the room has delivered up to 8.
        hub.deliver(&event(Topic::Room(5), EventKind::Message { seq: 10 }, 10));
        assert_eq!(hub.join(5, 2), Some(8));
        hub.deliver(&event(Topic::Room(5), EventKind::Message { seq: 9 }, 10));
        assert_eq!(seqs(&b), [9, 10], "everything after the head reaches the new member, in order");
        assert_eq!(hub.join(5, 99), None, "an unregistered connection joins nothing");
    }

    #[test]
    fn joiners_share_one_encoding_of_the_same_room_presence() {
        let hub = Hub::default();
        let member = Arc::new(Member::new(1, 10, "t1".into(), 8));
        hub.register(member);
        hub.join(5, 1);
        let users: Arc<[crate::wire::UserRef]> = vec![crate::wire::UserRef { id: 10, username: "alice".into() }].into();
        let frame = |online, users: &Arc<[crate::wire::UserRef]>| RoomPresence {
            room: "r".into(),
            online,
            users: users.clone(),
        };
        let first = hub.joiner_presence(5, frame(1, &users));
        assert_eq!(first, crate::wire::encode_bytes(&ServerFrame::RoomPresence(frame(1, &users))));
        let same = hub.joiner_presence(5, frame(1, &users));
        assert_eq!(same.as_ptr(), first.as_ptr(), "the same frame: the same bytes, not a new encoding");
        let counted = hub.joiner_presence(5, frame(2, &users));
        assert_eq!(counted, crate::wire::encode_bytes(&ServerFrame::RoomPresence(frame(2, &users))), "a new count");
        let other: Arc<[crate::wire::UserRef]> = vec![crate::wire::UserRef { id: 11, username: "bob".into() }].into();
        let paged = hub.joiner_presence(5, frame(2, &other));
        assert_eq!(paged, crate::wire::encode_bytes(&ServerFrame::RoomPresence(frame(2, &other))), "a new page");
        let elsewhere = hub.joiner_presence(6, frame(2, &other));
        assert_eq!(elsewhere, paged, "a room with no members here keeps nothing, and is still answered");
    }

    #[test]
    fn shutting_down_signals_every_connection_and_any_that_registers_later() {
        let hub = Hub::default();
        let before = Arc::new(Member::new(1, 10, "t1".into(), 8));
        hub.register(before.clone());
        assert_eq!(before.signalled().now_or_never(), None);
        hub.shut_down();
        assert_eq!(before.signalled().now_or_never(), Some(Signals::SHUTDOWN));
        assert_eq!(before.signalled().now_or_never(), None, "a signal is taken once");
        let after = Arc::new(Member::new(2, 10, "t2".into(), 8));
        hub.register(after.clone());
        assert_eq!(after.signalled().now_or_never(), Some(Signals::SHUTDOWN));
    }

    fn event(topic: Topic, kind: EventKind, from_user: u64) -> Event {
        Event { topic, kind, from_user, bytes: Bytes::from_static(b"x") }
    }

    #[tokio::test]
    async fn delivers_to_room_members_only_and_skips_own_typing() {
        let hub = Hub::default();
        let a = Arc::new(Member::new(1, 10, "t1".into(), 8));
        let b = Arc::new(Member::new(2, 20, "t2".into(), 8));
        hub.register(a.clone());
        hub.register(b.clone());
        hub.join(5, 1);
        hub.start(5, 0);
        hub.deliver(&event(Topic::Room(5), EventKind::Message { seq: 1 }, 20));
        hub.deliver(&event(Topic::Room(5), EventKind::Typing, 10));
        assert_eq!(a.signalled().await, Signals::EVENTS);
        let kinds: Vec<EventKind> = a.take(10).into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Message { seq: 1 }], "own typing is not echoed");
        assert!(b.take(10).is_empty(), "non-member gets no room events");
        hub.unregister(1, [5]);
        assert_eq!(hub.connections(), 1);
    }

    #[tokio::test]
    async fn presence_transitions_mark_the_room_and_refreshes_are_spaced() {
        let hub = Hub::default();
        let a = Arc::new(Member::new(1, 10, "t1".into(), 8));
        let b = Arc::new(Member::new(2, 20, "t2".into(), 8));
        hub.register(a.clone());
        hub.register(b.clone());
        hub.join(5, 1);
        let interval = Duration::from_millis(500);
        let t0 = Instant::now();
        assert!(hub.presence_due(t0, interval).is_empty(), "nothing changed");
        hub.deliver(&Event { topic: Topic::Room(5), kind: EventKind::Presence, from_user: 20, bytes: Bytes::new() });
        hub.deliver(&Event { topic: Topic::Room(6), kind: EventKind::Presence, from_user: 20, bytes: Bytes::new() });
        assert!(a.take(10).is_empty(), "a transition is not forwarded");
        assert_eq!(hub.presence_due(t0, interval), vec![5], "room 6 has no member here");
        hub.mark_presence(5);
        assert!(hub.presence_due(t0 + interval / 2, interval).is_empty(), "coalesced within the interval");
        assert_eq!(hub.presence_due(t0 + interval, interval), vec![5]);
        let user = |id| crate::wire::UserRef { id, username: format!("u{id}") };
        let frame = |online, users: Vec<u64>| RoomPresence {
            room: "r".into(),
            online,
            users: users.into_iter().map(user).collect(),
        };
        assert!(hub.deliver_presence(5, frame(60, vec![1, 2]), t0));
        assert_eq!(a.take(10).into_iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Presence]);
        assert!(b.take(10).is_empty(), "only the room's members");
        assert!(!hub.deliver_presence(5, frame(60, vec![1, 2]), t0 + interval), "nothing new");
        assert!(hub.presence_due(t0 + interval * 2, interval).is_empty(), "and nothing pending");
        // The count alone changed: it waits for COUNT_INTERVAL, and the room stays marked.
        assert!(!hub.deliver_presence(5, frame(61, vec![1, 2]), t0 + interval));
        assert_eq!(hub.presence_due(t0 + interval * 2, interval), vec![5]);
        assert!(hub.deliver_presence(5, frame(61, vec![1, 2]), t0 + COUNT_INTERVAL));
        // The listed users changed: at once.
        assert!(hub.deliver_presence(5, frame(61, vec![1, 3]), t0 + COUNT_INTERVAL + interval));
        assert_eq!(a.take(10).into_iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Presence; 2]);
        hub.resync();
        assert_eq!(hub.presence_due(t0 + COUNT_INTERVAL * 2, interval), vec![5], "a relay re-sync refreshes presence");

        // b joins and the room's presence cannot be read for it: the next frame reaches b
        // even though it shows a nothing new, and only b.
        hub.join(5, 2);
        hub.owe_presence(5, 2);
        let later = t0 + COUNT_INTERVAL * 3;
        assert_eq!(hub.presence_due(later, interval), vec![5], "the room is read again");
        assert!(!hub.deliver_presence(5, frame(61, vec![1, 3]), later), "nothing new for a");
        assert!(a.take(10).is_empty());
        assert_eq!(b.take(10).into_iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Presence]);
        assert!(!hub.deliver_presence(5, frame(61, vec![1, 3]), later + interval), "owed once");
        assert!(b.take(10).is_empty());
    }

    #[tokio::test]
    async fn a_revocation_reaches_only_connections_of_that_token() {
        let hub = Hub::default();
        let same_token = Arc::new(Member::new(1, 10, "jti-a".into(), 8));
        let other_token = Arc::new(Member::new(2, 10, "jti-b".into(), 8));
        hub.register(same_token.clone());
        hub.register(other_token.clone());
        let revoke = Event {
            topic: Topic::Everyone,
            kind: EventKind::Revoke,
            from_user: 10,
            bytes: Bytes::from_static(b"jti-a"),
        };
        hub.deliver(&revoke);
        let signals = tokio::time::timeout(std::time::Duration::from_secs(5), same_token.signalled()).await;
        assert_eq!(signals.expect("revoked"), Signals::REVOKED);
        assert!(same_token.take(10).is_empty() && other_token.take(10).is_empty(), "a revocation is never forwarded");
        assert_eq!(other_token.signalled().now_or_never(), None, "another token of the same user stays");
    }

    #[tokio::test]
    async fn a_full_queue_kicks_the_member_instead_of_growing() {
        let hub = Hub::default();
        let member = Arc::new(Member::new(1, 10, "t1".into(), 2));
        hub.register(member.clone());
        hub.join(5, 1);
        hub.start(5, 0);
        for seq in 1..=3 {
            hub.deliver(&event(Topic::Room(5), EventKind::Message { seq }, 20));
        }
        // Two events, then the kick; the third event is not queued.
        assert!(member.kicked().now_or_never().is_some());
        assert!(member.kicked().now_or_never().is_none(), "a kick is taken once");
        assert_eq!(member.signalled().now_or_never(), Some(Signals::EVENTS));
        assert_eq!(member.take(10).len(), 2);
    }

    fn seqs(member: &Member) -> Vec<u64> {
        let mut out = Vec::new();
        for e in member.take(usize::MAX) {
            if let EventKind::Message { seq } = e.kind {
                out.push(seq);
            }
        }
        out
    }

    #[tokio::test]
    async fn a_room_is_delivered_in_seq_order_without_duplicates() {
        let hub = Hub::default();
        let member = Arc::new(Member::new(1, 10, "t".into(), 64));
        hub.register(member.clone());
        hub.join(5, 1);
        // Before the first join read the head, everything is held back.
        hub.deliver(&event(Topic::Room(5), EventKind::Message { seq: 4 }, 20));
        hub.deliver(&event(Topic::Room(5), EventKind::Message { seq: 2 }, 20));
        assert!(seqs(&member).is_empty());
        hub.start(5, 2);
        assert_eq!(seqs(&member), Vec::<u64>::new(), "3 is missing: 4 waits");
        let (due, later) = hub.due_gaps(Instant::now());
        assert!(due.is_empty() && later.is_some(), "a fresh gap waits GAP_HOLD");
        let (due, _) = hub.due_gaps(Instant::now() + GAP_HOLD);
        assert_eq!(due, vec![(5, 3, 3)], "then seq 3 is read from the store");
        hub.deliver(&event(Topic::Room(5), EventKind::Message { seq: 3 }, 20));
        assert_eq!(seqs(&member), vec![3, 4]);
        for seq in [4, 3, 5, 5, 7, 6] {
            hub.deliver(&event(Topic::Room(5), EventKind::Message { seq }, 20));
        }
        assert_eq!(seqs(&member), vec![5, 6, 7], "duplicates dropped, overtaken ones reordered");
        assert!(hub.due_gaps(Instant::now() + GAP_HOLD).0.is_empty());
        // A later start (another member's join) never moves the stream back.
        hub.start(5, 1);
        hub.deliver(&event(Topic::Room(5), EventKind::Message { seq: 2 }, 20));
        assert!(seqs(&member).is_empty());
        assert_eq!(hub.streams(), vec![(5, 8)]);
    }

    #[tokio::test]
    async fn a_room_without_members_is_forgotten() {
        let hub = Hub::default();
        hub.register(Arc::new(Member::new(1, 10, "t".into(), 8)));
        hub.join(5, 1);
        assert!(hub.wants(5));
        assert!(hub.leave(5, 1), "the last member left");
        assert!(!hub.wants(5));
        hub.join(6, 1);
        assert_eq!(hub.unregister(1, [6]), vec![6]);
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_member_takes_events_in_order_in_batches_and_an_empty_queue_holds_no_memory() {
        let member = Member::new(1, 10, "t".into(), 100);
        for seq in 1..=5 {
            member.offer(&Event {
                topic: Topic::Room(1),
                kind: EventKind::Message { seq },
                from_user: 2,
                bytes: Bytes::new(),
            });
        }
        assert_eq!(member.signalled().await, Signals::EVENTS);
        let first: Vec<EventKind> = member.take(3).into_iter().map(|e| e.kind).collect();
        assert_eq!(first, (1..=3).map(|seq| EventKind::Message { seq }).collect::<Vec<_>>());
        // Some remain: signalled again at once; once all are taken, not any more.
        assert_eq!(member.signalled().now_or_never(), Some(Signals::EVENTS));
        assert_eq!(member.take(3).len(), 2);
        member.offer(&Event {
            topic: Topic::Room(1),
            kind: EventKind::Message { seq: 6 },
            from_user: 2,
            bytes: Bytes::new(),
        });
        assert_eq!(member.take(3).len(), 1);
        assert_eq!(member.signalled().now_or_never(), None, "no wake for events already taken");
        assert_eq!(member.queue().capacity(), 0, "the queue's memory went with its events");
    }
}

#[cfg(test)]
mod membership_tests {
    use super::*;
    use crate::store::{NewRoom, SqliteStore};

    #[tokio::test]
    async fn a_periodic_check_takes_out_a_member_whose_removal_event_never_came() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let alice = store.create_user("alice", "a@x.io", "h").await.unwrap();
        let bob = store.create_user("bob", "b@x.io", "h").await.unwrap();
        let room = store
            .create_room(NewRoom {
                name: "inner".into(),
                topic: String::new(),
                kind: RoomKind::Private,
                owner: Some(alice.id),
                members: vec![bob.id],
            })
            .await
            .unwrap();
        let rooms = RoomDirectory::new(vec![room.clone()]);
        let hub = Hub::default();
        let (a, b) =
            (Arc::new(Member::new(1, alice.id, "ta".into(), 8)), Arc::new(Member::new(2, bob.id, "tb".into(), 8)));
        hub.register(a.clone());
        hub.register(b.clone());
        hub.join(room.id, 1);
        hub.join(room.id, 2);
        assert!(revalidate(&hub, &store, &rooms).await);
        assert!(a.take(10).is_empty() && b.take(10).is_empty(), "both still members");
        assert!(store.remove_member(room.id, bob.id).await.unwrap());
        assert!(revalidate(&hub, &store, &rooms).await);
        let removed: Vec<(EventKind, u64)> = b.take(10).into_iter().map(|e| (e.kind, e.from_user)).collect();
        assert_eq!(removed, [(EventKind::Removed, bob.id)]);
        assert!(a.take(10).is_empty(), "alice stays");
    }
}
