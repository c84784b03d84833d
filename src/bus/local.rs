//! In-process relay: publishing is delivering to this node's hub.

use super::{Bus, BusError};
use crate::hub::{Event, Hub};
use async_trait::async_trait;
use std::sync::Arc;

/// The single-node [`Bus`].
pub struct LocalBus {
    hub: Arc<Hub>,
}

impl LocalBus {
    /// A bus that delivers straight into `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, event: Event) -> Result<(), BusError> {
        self.hub.deliver(&event);
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}
