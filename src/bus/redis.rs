//! Relay through Redis pub/sub. Every event is encoded once into an envelope and published
//! once, on its room's channel (`socketchat:room:<id>`) or on the node-wide channel
//! (`socketchat:all`: presence, revocations). A node subscribes to a room's channel only while
//! the room has local members. On a Redis Cluster the same channels are **sharded** channels
//! (`SPUBLISH`/`SSUBSCRIBE`, Redis ≥ 7): each room lives on the shard that owns its channel's
//! slot, so relay throughput grows with the shards.
//!
//! Pub/sub is fire and forget: whatever is published while a subscriber is disconnected is
//! lost. The hub recovers messages (gap fill, head checks) and is told to re-sync after every
//! reconnect; typing and presence changes are ephemeral.
//!
//! Two tasks: the publisher drains a bounded queue in pipelined batches; the subscriber owns
//! the subscription connection, reconciles subscriptions with the hub's rooms, pings, and
//! reconnects with backoff.

use super::{Bus, BusError, Inbox, RelayCounters};
use crate::hub::{Event, EventKind, Topic};
use crate::redis_client::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, RedisClient, RedisTarget};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Events waiting to be published; beyond, events are dropped (and counted).
const PUBLISH_QUEUE: usize = 65_536;
/// Most events in one pipelined batch.
const PUBLISH_BATCH: usize = 512;
/// How often the subscription connection is pinged (a half-open TCP connection never ends).
const PING_EVERY: Duration = Duration::from_secs(3);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long `flush` waits for the publisher at shutdown.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The node-wide channel.
const ALL: &str = "socketchat:all";
/// `Topic::Everyone` in an envelope.
const EVERYONE: u64 = u64::MAX;

/// A room's channel.
fn room_channel(room: u64) -> String {
    format!("socketchat:room:{room}")
}

/// Envelope layout, all integers little-endian:
/// `version u8 (1) | origin u64 | kind u8 | room u64 (u64::MAX = everyone) | seq u64 |
/// from_user u64 | frame bytes…`. The frame is the encoded `ServerFrame`, shared as is.
const ENVELOPE_VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 1 + 8 + 8 + 8;

fn encode(origin: u64, event: &Event) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER + event.bytes.len());
    out.put_u8(ENVELOPE_VERSION);
    out.put_u64_le(origin);
    let (kind, seq) = match event.kind {
        EventKind::Message { seq } => (0, seq),
        EventKind::Typing => (1, 0),
        EventKind::Presence => (2, 0),
        EventKind::Revoke => (3, 0),
        EventKind::Removed => (4, 0),
        EventKind::ToUser => (5, 0),
    };
    out.put_u8(kind);
    out.put_u64_le(match event.topic {
        Topic::Room(room) => room,
        Topic::Everyone => EVERYONE,
    });
    out.put_u64_le(seq);
    out.put_u64_le(event.from_user);
    out.put_slice(&event.bytes);
    out.freeze()
}

/// Decodes an envelope: its origin and the event; `None` for anything malformed.
fn decode(payload: &[u8]) -> Option<(u64, Event)> {
    if payload.len() < HEADER || payload[0] != ENVELOPE_VERSION {
        return None;
    }
    let mut buf = &payload[1..];
    let origin = buf.get_u64_le();
    let kind = buf.get_u8();
    let room = buf.get_u64_le();
    let seq = buf.get_u64_le();
    let from_user = buf.get_u64_le();
    let kind = match kind {
        0 => EventKind::Message { seq },
        1 => EventKind::Typing,
        2 => EventKind::Presence,
        3 => EventKind::Revoke,
        4 => EventKind::Removed,
        5 => EventKind::ToUser,
        _ => return None,
    };
    let topic = if room == EVERYONE { Topic::Everyone } else { Topic::Room(room) };
    Some((origin, Event { topic, kind, from_user, bytes: Bytes::copy_from_slice(buf) }))
}

fn channel_of(event: &Event) -> String {
    match event.topic {
        Topic::Room(room) => room_channel(room),
        Topic::Everyone => ALL.to_owned(),
    }
}

enum Outgoing {
    Event { channel: String, payload: Bytes },
    Flush(oneshot::Sender<()>),
}

enum Control {
    /// Match the room's subscription to whether the hub wants it; answer once done.
    Reconcile(u64, Option<oneshot::Sender<()>>),
}

/// The Redis [`Bus`].
pub struct RedisBus {
    origin: u64,
    out: mpsc::Sender<Outgoing>,
    control: mpsc::UnboundedSender<Control>,
    /// Rooms whose subscription is confirmed (a join can skip the round trip).
    confirmed: Arc<Mutex<HashSet<u64>>>,
    /// Rooms with an unsubscribe request queued: one each at most, so the control queue stays
    /// bounded by the number of rooms however often members leave and join (G6). A joiner's
    /// subscribe is awaited, so those are bounded by the connections.
    leaving: Arc<Mutex<HashSet<u64>>>,
    connected: Arc<AtomicBool>,
    commands: RedisClient,
    counters: Arc<RelayCounters>,
}

fn locked<T>(set: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedisBus {
    /// Starts the publisher and the subscriber; `inbox` receives other nodes' events.
    pub fn start(target: RedisTarget, commands: RedisClient, inbox: Arc<dyn Inbox>) -> Self {
        let origin = rand::random::<u64>();
        let (out, out_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        let confirmed = Arc::new(Mutex::new(HashSet::new()));
        let leaving = Arc::new(Mutex::new(HashSet::new()));
        let connected = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(RelayCounters::default());
        tokio::spawn(publisher(out_rx, commands.clone(), target.cluster, counters.clone()));
        let subscriber = Subscriber {
            target,
            origin,
            inbox,
            confirmed: confirmed.clone(),
            leaving: leaving.clone(),
            connected: connected.clone(),
            counters: counters.clone(),
            subscribed: HashSet::new(),
        };
        tokio::spawn(subscriber.run(control_rx));
        Self { origin, out, control, confirmed, leaving, connected, commands, counters }
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn publish(&self, event: &Event) {
        let item = Outgoing::Event { channel: channel_of(event), payload: encode(self.origin, event) };
        if self.out.try_send(item).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn subscribe(&self, room: u64) -> Result<(), BusError> {
        if locked(&self.confirmed).contains(&room) {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.control.send(Control::Reconcile(room, Some(done))).map_err(|_| BusError("relay stopped".into()))?;
        wait.await.map_err(|_| BusError("relay stopped".into()))
    }

    fn unsubscribe(&self, room: u64) {
        if locked(&self.leaving).insert(room) {
            let _ = self.control.send(Control::Reconcile(room, None));
        }
    }

    async fn ping(&self) -> Result<(), BusError> {
        if !self.connected.load(Ordering::Relaxed) {
            return Err(BusError("subscription connection down".into()));
        }
        let mut conn = self.commands.clone();
        let cmd = redis::cmd("PING");
        match tokio::time::timeout(RESPONSE_TIMEOUT, cmd.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BusError(e.to_string())),
            Err(_) => Err(BusError("PING timed out".into())),
        }
    }

    fn counters(&self) -> Option<&RelayCounters> {
        Some(&self.counters)
    }

    async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.out.send(Outgoing::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(FLUSH_WAIT, wait).await;
        }
    }
}

/// Publishes queued events in pipelined batches, in queue order.
async fn publisher(
    mut rx: mpsc::Receiver<Outgoing>,
    mut conn: RedisClient,
    cluster: bool,
    counters: Arc<RelayCounters>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let mut flushes = Vec::new();
        let mut events = 0u64;
        for item in batch.drain(..) {
            match item {
                Outgoing::Event { channel, payload } => {
                    pipe.cmd(if cluster { "SPUBLISH" } else { "PUBLISH" }).arg(channel).arg(&payload[..]).ignore();
                    events += 1;
                }
                Outgoing::Flush(done) => flushes.push(done),
            }
        }
        if events > 0 {
            let sent = if cluster {
                // A cluster pipeline may span slots: send the commands one by one, concurrently.
                publish_each(&mut conn, &pipe).await
            } else {
                pipe.query_async::<()>(&mut conn).await
            };
            match sent {
                Ok(()) => counters.published.fetch_add(events, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, events, "relay publish failed; events dropped (messages are recovered from the store)");
                    counters.dropped.fetch_add(events, Ordering::Relaxed)
                }
            };
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Sends a batch to a cluster: each channel's events in order, different channels (which may
/// live on different shards) concurrently.
async fn publish_each(conn: &mut RedisClient, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
    let mut by_channel: std::collections::HashMap<Vec<u8>, Vec<&redis::Cmd>> = std::collections::HashMap::new();
    for cmd in pipe.cmd_iter() {
        let channel = cmd.args_iter().nth(1).map(|arg| match arg {
            redis::Arg::Simple(bytes) => bytes.to_vec(),
            _ => Vec::new(),
        });
        by_channel.entry(channel.unwrap_or_default()).or_default().push(cmd);
    }
    let sends = by_channel.into_values().map(|cmds| {
        let mut conn = conn.clone();
        async move {
            for cmd in cmds {
                cmd.query_async::<redis::Value>(&mut conn).await?;
            }
            Ok::<_, redis::RedisError>(())
        }
    });
    for result in futures_util::future::join_all(sends).await {
        result?;
    }
    Ok(())
}

/// What the subscription connection delivered.
enum Incoming {
    /// A published payload.
    Payload(Vec<u8>),
    /// The server dropped a subscription we did not ask to drop (cluster slot moved).
    Dropped(String),
    /// The connection was lost, or reconnected underneath us: events may be missing.
    Lost,
    /// Anything else (confirmations).
    Other,
}

/// The subscription connection: a dedicated pub/sub connection, or the cluster client with a
/// push channel.
enum Link {
    Single { sink: PubSubSink, stream: PubSubStream },
    Cluster { conn: ClusterConnection, pushes: mpsc::UnboundedReceiver<PushInfo> },
}

impl Link {
    async fn open(target: &RedisTarget) -> redis::RedisResult<Self> {
        if target.cluster {
            let (tx, pushes) = mpsc::unbounded_channel();
            let client = redis::cluster::ClusterClientBuilder::new(target.urls.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()?;
            Ok(Self::Cluster { conn: client.get_async_connection().await?, pushes })
        } else {
            let client = redis::Client::open(target.urls[0].as_str())?;
            let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
            let (sink, stream) = pubsub.split();
            Ok(Self::Single { sink, stream })
        }
    }

    async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        let done = async {
            match self {
                Self::Single { sink, .. } => sink.subscribe(channels).await,
                Self::Cluster { conn, .. } => {
                    for channel in channels {
                        conn.ssubscribe(channel).await?;
                    }
                    Ok(())
                }
            }
        };
        tokio::time::timeout(RESPONSE_TIMEOUT, done)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "subscribe timed out")))?
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        let done = async {
            match self {
                Self::Single { sink, .. } => sink.unsubscribe(channel).await,
                Self::Cluster { conn, .. } => conn.sunsubscribe(channel).await,
            }
        };
        tokio::time::timeout(RESPONSE_TIMEOUT, done)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "unsubscribe timed out")))?
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        let done = async {
            match self {
                Self::Single { sink, .. } => sink.ping::<redis::Value>().await.map(drop),
                // A keyed command also lets the cluster client notice topology changes.
                Self::Cluster { conn, .. } => redis::cmd("SPUBLISH")
                    .arg(ALL)
                    .arg(b"".as_slice())
                    .query_async::<redis::Value>(conn)
                    .await
                    .map(drop),
            }
        };
        tokio::time::timeout(RESPONSE_TIMEOUT, done)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "ping timed out")))?
    }

    async fn next(&mut self) -> Incoming {
        match self {
            Self::Single { stream, .. } => match stream.next().await {
                Some(msg) => Incoming::Payload(msg.get_payload_bytes().to_vec()),
                None => Incoming::Lost,
            },
            Self::Cluster { pushes, .. } => match pushes.recv().await {
                None => Incoming::Lost,
                Some(push) => match push.kind {
                    PushKind::SMessage | PushKind::Message => match redis::Msg::from_push_info(push) {
                        Some(msg) => Incoming::Payload(msg.get_payload_bytes().to_vec()),
                        None => Incoming::Other,
                    },
                    PushKind::Disconnection => Incoming::Lost,
                    PushKind::SUnsubscribe => match push.data.first() {
                        Some(redis::Value::BulkString(name)) => Incoming::Dropped(String::from_utf8_lossy(name).into()),
                        _ => Incoming::Other,
                    },
                    _ => Incoming::Other,
                },
            },
        }
    }

    /// Whether `Lost` means the connection is gone (standalone) or that the client reconnects
    /// by itself (cluster).
    fn reconnects_itself(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }
}

struct Subscriber {
    target: RedisTarget,
    origin: u64,
    inbox: Arc<dyn Inbox>,
    confirmed: Arc<Mutex<HashSet<u64>>>,
    leaving: Arc<Mutex<HashSet<u64>>>,
    connected: Arc<AtomicBool>,
    counters: Arc<RelayCounters>,
    /// Rooms subscribed (or to subscribe on the next connection).
    subscribed: HashSet<u64>,
}

impl Subscriber {
    fn confirmed(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        locked(&self.confirmed)
    }

    fn lose(&mut self, link: &mut Option<Link>, why: &str) {
        if link.take().is_some() {
            tracing::warn!(reason = why, "relay subscription connection lost; reconnecting");
        }
        self.connected.store(false, Ordering::Relaxed);
        self.confirmed().clear();
    }

    /// Opens the connection and subscribes to everything wanted; then the hub re-syncs.
    async fn connect(&mut self) -> redis::RedisResult<Link> {
        let mut link = Link::open(&self.target).await?;
        let mut channels = vec![ALL.to_owned()];
        channels.extend(self.subscribed.iter().map(|room| room_channel(*room)));
        link.subscribe(&channels).await?;
        self.confirmed().extend(self.subscribed.iter().copied());
        self.connected.store(true, Ordering::Relaxed);
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        self.inbox.handle_resync();
        Ok(link)
    }

    async fn reconcile(&mut self, link: &mut Option<Link>, room: u64) {
        let wanted = self.inbox.wants(room);
        if wanted == self.subscribed.contains(&room) {
            if wanted && link.is_some() {
                self.confirmed().insert(room);
            }
            return;
        }
        if wanted {
            self.subscribed.insert(room);
        } else {
            self.subscribed.remove(&room);
            self.confirmed().remove(&room);
        }
        let Some(active) = link.as_mut() else {
            // Subscribed on the next connection, which re-syncs every room.
            return;
        };
        let channel = room_channel(room);
        let result = if wanted {
            active.subscribe(std::slice::from_ref(&channel)).await
        } else {
            active.unsubscribe(&channel).await
        };
        match result {
            Ok(()) if wanted => {
                self.confirmed().insert(room);
            }
            Ok(()) => {}
            Err(e) => self.lose(link, &e.to_string()),
        }
    }

    fn handle_payload(&self, payload: &[u8]) {
        match decode(payload) {
            Some((origin, _)) if origin == self.origin => {}
            Some((_, event)) => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                self.inbox.handle_event(event);
            }
            None if payload.is_empty() => {}
            None => tracing::warn!(bytes = payload.len(), "malformed relay envelope ignored"),
        }
    }

    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut link: Option<Link> = None;
        let mut backoff = BACKOFF_MIN;
        let mut retry_at = Instant::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            if link.is_none() && Instant::now() >= retry_at {
                match self.connect().await {
                    Ok(l) => {
                        tracing::info!(cluster = self.target.cluster, "relay subscribed");
                        link = Some(l);
                        backoff = BACKOFF_MIN;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "relay cannot connect");
                        retry_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            let down = link.is_none();
            let incoming = async {
                match link.as_mut() {
                    Some(l) => l.next().await,
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                incoming = incoming => Wake::Incoming(incoming),
                ctl = control.recv() => Wake::Control(ctl),
                _ = ping.tick() => Wake::Ping,
                () = tokio::time::sleep_until(retry_at), if down => Wake::Retry,
            };
            match wake {
                Wake::Incoming(Incoming::Payload(payload)) => self.handle_payload(&payload),
                Wake::Incoming(Incoming::Lost) => {
                    if link.as_ref().is_some_and(Link::reconnects_itself) {
                        tracing::warn!("relay connection to a cluster node lost; re-syncing rooms");
                        self.inbox.handle_resync();
                    } else {
                        self.lose(&mut link, "connection closed");
                    }
                }
                Wake::Incoming(Incoming::Dropped(channel)) => {
                    // The server moved the slot: subscribe again where it lives now.
                    let room = channel.strip_prefix("socketchat:room:").and_then(|r| r.parse().ok());
                    let still = channel == ALL || room.is_some_and(|r| self.subscribed.contains(&r));
                    if still && let Some(active) = link.as_mut() {
                        if let Err(e) = active.subscribe(&[channel]).await {
                            self.lose(&mut link, &e.to_string());
                        }
                        self.inbox.handle_resync();
                    }
                }
                Wake::Incoming(Incoming::Other) | Wake::Retry => {}
                Wake::Control(None) => return,
                Wake::Control(Some(Control::Reconcile(room, done))) => {
                    if done.is_none() {
                        // Taken off before the hub is asked, so a leave after this queues again.
                        locked(&self.leaving).remove(&room);
                    }
                    self.reconcile(&mut link, room).await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Wake::Ping => {
                    if let Some(active) = link.as_mut()
                        && let Err(e) = active.ping().await
                    {
                        self.lose(&mut link, &e.to_string());
                    }
                }
            }
        }
    }
}

/// What woke the subscriber.
enum Wake {
    Incoming(Incoming),
    Control(Option<Control>),
    Ping,
    Retry,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let event = Event {
            topic: Topic::Room(7),
            kind: EventKind::Message { seq: 42 },
            from_user: 3,
            bytes: Bytes::from_static(b"frame"),
        };
        let (origin, back) = decode(&encode(99, &event)).expect("decodes");
        assert_eq!(origin, 99);
        assert_eq!(
            (back.topic, back.kind, back.from_user, &back.bytes[..]),
            (Topic::Room(7), event.kind, 3, &b"frame"[..])
        );
        let everyone = Event { topic: Topic::Everyone, kind: EventKind::Revoke, from_user: 1, bytes: Bytes::new() };
        assert_eq!(decode(&encode(1, &everyone)).unwrap().1.topic, Topic::Everyone);
        assert!(decode(b"short").is_none());
        let mut wrong_kind = encode(1, &everyone).to_vec();
        wrong_kind[9] = 9;
        assert!(decode(&wrong_kind).is_none());
        let mut wrong_version = encode(1, &everyone).to_vec();
        wrong_version[0] = 2;
        assert!(decode(&wrong_version).is_none());
    }
}
