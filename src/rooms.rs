//! The node's view of the rooms: name ↔ id, loaded from the store at start.

use crate::store::{Room, StoredMessage};
use crate::wire::{ChatMessage, UserRef};
use std::collections::HashMap;

/// Rooms by name and by id.
#[derive(Debug, Default)]
pub struct RoomDirectory {
    by_name: HashMap<String, Room>,
    by_id: HashMap<u64, Room>,
    ordered: Vec<Room>,
}

impl RoomDirectory {
    /// A directory of these rooms.
    pub fn new(rooms: Vec<Room>) -> Self {
        Self {
            by_name: rooms.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            by_id: rooms.iter().map(|r| (r.id, r.clone())).collect(),
            ordered: rooms,
        }
    }

    /// Looks a room up by name.
    pub fn by_name(&self, name: &str) -> Option<&Room> {
        self.by_name.get(name)
    }

    /// Looks a room up by id.
    pub fn by_id(&self, id: u64) -> Option<&Room> {
        self.by_id.get(&id)
    }

    /// All rooms in id order.
    pub fn all(&self) -> &[Room] {
        &self.ordered
    }

    /// The wire form of a stored message (room names travel, ids stay inside).
    pub fn to_wire(&self, m: &StoredMessage) -> ChatMessage {
        ChatMessage {
            room: self.by_id(m.room_id).map(|r| r.name.clone()).unwrap_or_default(),
            seq: m.seq,
            message_id: m.id,
            sender: UserRef { id: m.sender_id, username: m.sender_name.clone() },
            client_msg_id: m.client_msg_id,
            sent_at_ms: m.sent_at_ms,
            text: m.text.clone(),
        }
    }
}
