//! SocketChat: a real-time chat server. One binary; browsers over WebSocket, native apps over
//! the same compact binary protocol (`protocol/PROTOCOL.md`).
//!
//! # Layout
//!
//! - [`clock`]: wall-clock time as Unix numbers.
//! - [`config`]: the only module that reads the command line and environment.
//! - [`wire`]: sans-IO protocol codec — frames, postcard encoding, stream framing, limits, codes.
//! - [`session`]: sans-IO per-connection state machine (`handle_*` in, `poll_action` out).
//! - [`auth`]: JWT cookies, argon2id passwords, origin checks.
//! - [`hashing`]: the fixed pool of threads that hashes passwords, with a bounded queue.
//! - [`rate`]: token buckets, one (a connection's sends) or one per key (login attempts).
//! - [`hub`]: node-local rooms → member queues; bounded fan-out of shared bytes.
//! - `conn`: the async connection driver that carries out a session's actions.
//! - [`transport`]: thin adapters (`ws`, `wt`) that authenticate the upgrade and move frames;
//!   `certs` holds the HTTP/3 certificate.
//! - [`node`]: the node's shared state (below the transports, `http` and `conn`).
//! - [`store`]: durable state behind the `Store` trait (`sqlite` embedded, `postgres`).
//! - [`writer`]: group commit of sends, then delivery here and relay to the other nodes.
//! - [`bus`]: relay between nodes (`local` in-process, `redis` pub/sub or sharded pub/sub);
//!   pushes other nodes' events into the hub, which orders and repairs each room's stream.
//! - [`presence`]: connection counting per user, online and per room, with last-seen times
//!   (`local` in-process, `redis` across nodes with heartbeats and a reaper); the task that
//!   sends each room's `RoomPresence`, coalesced, to its members.
//! - [`redis_client`]: the command connection to Redis (standalone or cluster).
//! - [`rooms`]: room directory (name ↔ id).
//! - [`tickets`]: single-use WebTransport tickets.
//! - `http`: REST API, health, metrics, the embedded web client.
//! - [`metrics`]: the counters `GET /metrics` renders (Prometheus text).
//! - `allocator`: the tuning of glibc's malloc, set once at start.
//! - [`server`]: wiring and lifecycle (start, drain, stop).

mod allocator;
pub mod auth;
pub mod bus;
pub mod clock;
pub mod config;
mod conn;
pub mod hashing;
mod http;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod presence;
pub mod rate;
pub mod redis_client;
pub mod rooms;
pub mod server;
pub mod session;
pub mod store;
pub mod tickets;
pub mod transport;
pub mod wire;
pub mod writer;
