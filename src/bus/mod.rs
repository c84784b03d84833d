//! The relay between nodes. A node delivers its own events to its hub directly
//! ([`Node::broadcast`](crate::node::Node::broadcast)) and publishes them here for the others;
//! the bus pushes what other nodes published into the [`Inbox`] it was built with (the hub).
//! A node receives a room's events only while the room has local members (`subscribe` /
//! `unsubscribe`), and always receives node-wide events (presence, revocations).
//!
//! `local` is the embedded default (one process: nothing to relay); `redis` relays through
//! Redis pub/sub, sharded pub/sub on a Redis Cluster.

mod local;
pub mod redis;

pub use local::LocalBus;
pub use redis::RedisBus;

use crate::hub::Event;
use async_trait::async_trait;
use std::sync::atomic::AtomicU64;

/// Relay counters (exposed in `/metrics`).
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Events published.
    pub published: AtomicU64,
    /// Events dropped before publishing (queue full or Redis failed).
    pub dropped: AtomicU64,
    /// Events received from other nodes.
    pub received: AtomicU64,
    /// Subscription connections (re)established.
    pub connects: AtomicU64,
}

/// Why the relay failed.
#[derive(Debug, thiserror::Error)]
#[error("relay unavailable: {0}")]
pub struct BusError(pub String);

/// Where a bus hands what other nodes published.
pub trait Inbox: Send + Sync + 'static {
    /// An event from another node.
    fn handle_event(&self, event: Event);
    /// The relay may have lost events (it reconnected): re-check every room with the store.
    fn handle_resync(&self);
    /// Whether this node has members in the room (decides subscriptions).
    fn wants(&self, room: u64) -> bool;
}

/// Relays events between nodes.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Queues an event for the other nodes, without waiting. Publishing is best effort: what
    /// the relay loses, the hub's repair reads back from the store (messages) or is ephemeral.
    fn publish(&self, event: &Event);
    /// Makes sure the room's events reach this node; resolves once the relay confirmed, so
    /// that anything published afterwards is received.
    async fn subscribe(&self, room: u64) -> Result<(), BusError>;
    /// The room may have lost its last local member: stop receiving it unless it has members
    /// again by the time the relay gets to it.
    fn unsubscribe(&self, room: u64);
    /// Answers when the relay is usable (for `/readyz`).
    async fn ping(&self) -> Result<(), BusError>;
    /// Waits (up to a bound) until queued publishes went out, for a clean shutdown.
    async fn flush(&self);
    /// What the relay counted (`None`: nothing to relay).
    fn counters(&self) -> Option<&RelayCounters> {
        None
    }
}
