//! In-process relay: one node, so there is nobody to relay to. The node delivers its own
//! events to its hub directly; publishing and subscribing have nothing left to do.

use super::{Bus, BusError};
use crate::hub::Event;
use async_trait::async_trait;

/// The single-node [`Bus`].
#[derive(Debug, Default)]
pub struct LocalBus;

#[async_trait]
impl Bus for LocalBus {
    fn publish(&self, _event: &Event) {}

    async fn subscribe(&self, _room: u64) -> Result<(), BusError> {
        Ok(())
    }

    fn unsubscribe(&self, _room: u64) {}

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn flush(&self) {}
}
