//! Thin adapters that authenticate an upgrade and move frames between a socket and the driver.

pub mod certs;
pub mod ws;
pub(crate) mod wt;
