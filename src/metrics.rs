//! Counters for `GET /metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Node-wide counters; relaxed atomics, read only for reporting.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Upgrades refused (origin or token).
    pub upgrades_refused: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Frames that could not be decoded, text messages, oversized frames.
    pub bad_frames: AtomicU64,
    /// Connections closed because they could not keep up.
    pub slow_disconnects: AtomicU64,
    /// TCP sockets closed and QUIC connections refused at once: over the node's cap or one
    /// address's share.
    pub sockets_refused: AtomicU64,
    /// `accept` failures (file descriptors exhausted, …).
    pub accept_errors: AtomicU64,
    /// QUIC connections asked to prove their address first (Retry).
    pub quic_retries: AtomicU64,
}

impl Metrics {
    /// The exposition text.
    pub fn render(
        &self,
        hub_connections: usize,
        writer: &crate::writer::Counters,
        relay: Option<&crate::bus::RelayCounters>,
    ) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP socketchat_{name} {help}\n# TYPE socketchat_{name} {kind}\nsocketchat_{name} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        line("connections_open", "gauge", "Connections open now.", get(&self.connections_open));
        line("hub_members", "gauge", "Connections registered in the hub.", hub_connections as u64);
        line("connections_total", "counter", "Connections accepted.", get(&self.connections_total));
        line("upgrades_refused_total", "counter", "Upgrades refused for origin or token.", get(&self.upgrades_refused));
        line("frames_in_total", "counter", "Frames received.", get(&self.frames_in));
        line("frames_out_total", "counter", "Frames sent.", get(&self.frames_out));
        line("bad_frames_total", "counter", "Undecodable, oversized or text frames.", get(&self.bad_frames));
        line("slow_disconnects_total", "counter", "Connections closed as slow consumers.", get(&self.slow_disconnects));
        line(
            "sockets_refused_total",
            "counter",
            "TCP sockets closed and QUIC connections refused at once: over the cap or one address's share.",
            get(&self.sockets_refused),
        );
        line(
            "quic_retries_total",
            "counter",
            "QUIC connections asked to prove their address (Retry) before they count.",
            get(&self.quic_retries),
        );
        line(
            "accept_errors_total",
            "counter",
            "Failed accepts (file descriptors exhausted).",
            get(&self.accept_errors),
        );
        line("messages_stored_total", "counter", "Messages stored (duplicates excluded).", get(&writer.stored));
        line("store_batches_total", "counter", "Group-commit batches sent to the store.", get(&writer.batches));
        line("store_sends_total", "counter", "Sends handed to the store, duplicates included.", get(&writer.sends));
        line(
            "sends_shed_total",
            "counter",
            "Sends refused at once because their writer's queue was full (overload).",
            get(&writer.shed),
        );
        if let Some(relay) = relay {
            line("relay_published_total", "counter", "Events published to the other nodes.", get(&relay.published));
            line(
                "relay_dropped_total",
                "counter",
                "Events not published (queue full or Redis failed).",
                get(&relay.dropped),
            );
            line("relay_received_total", "counter", "Events received from other nodes.", get(&relay.received));
            line(
                "relay_connects_total",
                "counter",
                "Relay subscription connections established.",
                get(&relay.connects),
            );
        }
        out
    }
}
