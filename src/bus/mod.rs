//! The relay between nodes. Publishing hands an event to every node's hub (this node's
//! included); the bus pushes inbound events to the hub it was built with. `local` is the
//! embedded default (one process); a Redis backend plugs in here for the cluster.

mod local;

pub use local::LocalBus;

use crate::hub::Event;
use async_trait::async_trait;

/// Why a publish failed (the event is lost to other nodes; stored messages stay in the store).
#[derive(Debug, thiserror::Error)]
#[error("relay unavailable: {0}")]
pub struct BusError(pub String);

/// Relays events to every node.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes an event to every node.
    async fn publish(&self, event: Event) -> Result<(), BusError>;
    /// Answers when the relay is usable (for `/readyz`).
    async fn ping(&self) -> Result<(), BusError>;
}
