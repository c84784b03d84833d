//! The node's view of the rooms: name ↔ id. Users create rooms on any node at any time, so this
//! is a cache filled from the store on demand (`Node::visible_room`), seeded with the public
//! rooms at start. A room's name, id and kind never change, so a cached entry is never stale;
//! who may see a private room is asked of the store, never cached here.

use crate::store::{Room, StoredMessage};
use crate::wire::{ChatMessage, UserRef};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Rooms cached at most; beyond it, rooms without members on this node are forgotten (they
/// are read again when needed).
pub const MAX_CACHED_ROOMS: usize = 65_536;

/// Rooms by name and by id.
#[derive(Debug, Default)]
pub struct RoomDirectory {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<String, Arc<Room>>,
    by_id: HashMap<u64, Arc<Room>>,
}

impl RoomDirectory {
    /// A directory of these rooms.
    pub fn new(rooms: Vec<Room>) -> Self {
        let directory = Self::default();
        for room in rooms {
            directory.insert(room, |_| true);
        }
        directory
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks a room up by name.
    pub fn by_name(&self, name: &str) -> Option<Arc<Room>> {
        self.read().by_name.get(name).cloned()
    }

    /// Looks a room up by id.
    pub fn by_id(&self, id: u64) -> Option<Arc<Room>> {
        self.read().by_id.get(&id).cloned()
    }

    /// The name of a room (empty when not cached, which a room with local members always is).
    pub fn name_of(&self, id: u64) -> String {
        self.read().by_id.get(&id).map(|r| r.name.clone()).unwrap_or_default()
    }

    /// Caches a room read from the store. When the cache is full, rooms for which `keep` says
    /// no (rooms without local members) are forgotten first.
    pub fn insert(&self, room: Room, keep: impl Fn(u64) -> bool) -> Arc<Room> {
        let mut inner = self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = inner.by_id.get(&room.id) {
            return known.clone();
        }
        if inner.by_id.len() >= MAX_CACHED_ROOMS {
            inner.by_id.retain(|id, _| keep(*id));
            let Inner { by_name, by_id } = &mut *inner;
            by_name.retain(|_, room| by_id.contains_key(&room.id));
        }
        let room = Arc::new(room);
        inner.by_name.insert(room.name.clone(), room.clone());
        inner.by_id.insert(room.id, room.clone());
        room
    }

    /// The wire form of a stored message (room names travel, ids stay inside).
    pub fn to_wire(&self, m: &StoredMessage) -> ChatMessage {
        ChatMessage {
            room: self.name_of(m.room_id),
            seq: m.seq,
            message_id: m.id,
            sender: UserRef { id: m.sender_id, username: m.sender_name.clone() },
            client_msg_id: m.client_msg_id,
            sent_at_ms: m.sent_at_ms,
            text: m.text.clone(),
            kind: m.kind,
            target_seq: m.target_seq,
            edited_at_ms: m.edited_at_ms,
            deleted: m.deleted,
            attachments: m.attachments.clone(),
        }
    }
}
