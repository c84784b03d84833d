//! Node-local fan-out: which connections are in which room. Events arrive encoded once; every
//! recipient gets a clone of the same `Bytes`. A recipient whose queue is full is marked slow
//! and kicked instead of growing memory (G6).

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Notify, mpsc};

/// Who an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Members of one room.
    Room(u64),
    /// Every connection of the node (presence).
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
    /// Presence change.
    Presence,
    /// A token was revoked (logout): `bytes` holds its id; the user's connections that
    /// authenticated with it are closed. Never forwarded.
    Revoke,
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

/// One connection as the hub sees it.
#[derive(Debug)]
pub struct Member {
    /// Connection id.
    pub id: u64,
    /// Authenticated user.
    pub user_id: u64,
    /// Id of the token the connection authenticated with.
    pub token_id: String,
    tx: mpsc::Sender<Event>,
    slow: AtomicBool,
    kick: Notify,
    revoke: Notify,
}

impl Member {
    /// A member that receives events on `tx`.
    pub fn new(id: u64, user_id: u64, token_id: String, tx: mpsc::Sender<Event>) -> Self {
        Self { id, user_id, token_id, tx, slow: AtomicBool::new(false), kick: Notify::new(), revoke: Notify::new() }
    }

    /// Completes once the connection's token was revoked.
    pub async fn revoked(&self) {
        self.revoke.notified().await;
    }

    /// Completes once the hub found this member's queue full.
    pub async fn kicked(&self) {
        self.kick.notified().await;
    }

    fn offer(&self, event: &Event) {
        if self.slow.load(Ordering::Relaxed) {
            return;
        }
        if self.tx.try_send(event.clone()).is_err() {
            self.slow.store(true, Ordering::Relaxed);
            self.kick.notify_one();
        }
    }
}

/// Rooms → members, plus everyone on the node.
#[derive(Debug, Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rooms: HashMap<u64, HashMap<u64, std::sync::Arc<Member>>>,
    everyone: HashMap<u64, std::sync::Arc<Member>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connection to the node (it starts receiving `Everyone` events).
    pub fn register(&self, member: std::sync::Arc<Member>) {
        self.lock().everyone.insert(member.id, member);
    }

    /// Removes a connection from the node and from these rooms.
    pub fn unregister(&self, member_id: u64, rooms: impl IntoIterator<Item = u64>) {
        let mut inner = self.lock();
        inner.everyone.remove(&member_id);
        for room in rooms {
            Self::remove(&mut inner, room, member_id);
        }
    }

    /// Makes a registered connection a member of a room (from now on it receives its events).
    pub fn join(&self, room: u64, member_id: u64) {
        let mut inner = self.lock();
        if let Some(member) = inner.everyone.get(&member_id).cloned() {
            inner.rooms.entry(room).or_default().insert(member_id, member);
        }
    }

    /// Ends a room membership.
    pub fn leave(&self, room: u64, member_id: u64) {
        Self::remove(&mut self.lock(), room, member_id);
    }

    fn remove(inner: &mut Inner, room: u64, member_id: u64) {
        if let Some(members) = inner.rooms.get_mut(&room) {
            members.remove(&member_id);
            if members.is_empty() {
                inner.rooms.remove(&room);
            }
        }
    }

    /// Hands an event to every recipient's queue without waiting.
    pub fn deliver(&self, event: &Event) {
        let inner = self.lock();
        let members = match event.topic {
            Topic::Everyone => &inner.everyone,
            Topic::Room(room) => match inner.rooms.get(&room) {
                Some(members) => members,
                None => return,
            },
        };
        for member in members.values() {
            match event.kind {
                EventKind::Typing if member.user_id == event.from_user => {}
                EventKind::Revoke => {
                    if member.user_id == event.from_user && member.token_id.as_bytes() == &event.bytes[..] {
                        member.revoke.notify_one();
                    }
                }
                _ => member.offer(event),
            }
        }
    }

    /// Number of connections on the node.
    pub fn connections(&self) -> usize {
        self.lock().everyone.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn event(topic: Topic, kind: EventKind, from_user: u64) -> Event {
        Event { topic, kind, from_user, bytes: Bytes::from_static(b"x") }
    }

    #[tokio::test]
    async fn delivers_to_room_members_only_and_skips_own_typing() {
        let hub = Hub::default();
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        hub.register(Arc::new(Member::new(1, 10, "t1".into(), tx_a)));
        hub.register(Arc::new(Member::new(2, 20, "t2".into(), tx_b)));
        hub.join(5, 1);
        hub.deliver(&event(Topic::Room(5), EventKind::Message { seq: 1 }, 20));
        hub.deliver(&event(Topic::Room(5), EventKind::Typing, 10));
        hub.deliver(&event(Topic::Everyone, EventKind::Presence, 10));
        assert_eq!(rx_a.recv().await.unwrap().kind, EventKind::Message { seq: 1 });
        assert_eq!(rx_a.recv().await.unwrap().kind, EventKind::Presence);
        assert!(rx_a.try_recv().is_err(), "own typing is not echoed");
        assert_eq!(rx_b.recv().await.unwrap().kind, EventKind::Presence);
        assert!(rx_b.try_recv().is_err(), "non-member gets no room events");
        hub.unregister(1, [5]);
        assert_eq!(hub.connections(), 1);
    }

    #[tokio::test]
    async fn a_revocation_reaches_only_connections_of_that_token() {
        let hub = Hub::default();
        let (tx, mut rx) = mpsc::channel(8);
        let same_token = Arc::new(Member::new(1, 10, "jti-a".into(), tx.clone()));
        let other_token = Arc::new(Member::new(2, 10, "jti-b".into(), tx));
        hub.register(same_token.clone());
        hub.register(other_token.clone());
        let revoke = Event {
            topic: Topic::Everyone,
            kind: EventKind::Revoke,
            from_user: 10,
            bytes: Bytes::from_static(b"jti-a"),
        };
        hub.deliver(&revoke);
        tokio::time::timeout(std::time::Duration::from_secs(5), same_token.revoked()).await.expect("revoked");
        assert!(rx.try_recv().is_err(), "a revocation is never forwarded");
        let not_yet = tokio::time::timeout(std::time::Duration::from_millis(50), other_token.revoked()).await;
        assert!(not_yet.is_err(), "another token of the same user stays");
    }

    #[tokio::test]
    async fn a_full_queue_kicks_the_member_instead_of_growing() {
        let hub = Hub::default();
        let (tx, _rx) = mpsc::channel(2);
        let member = Arc::new(Member::new(1, 10, "t1".into(), tx));
        hub.register(member.clone());
        hub.join(5, 1);
        for seq in 1..=3 {
            hub.deliver(&event(Topic::Room(5), EventKind::Message { seq }, 20));
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), member.kicked()).await.expect("kicked");
    }
}
