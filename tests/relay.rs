//! Contract suites for the cluster backends, each run against every backend it has: the relay
//! (`Bus`) against a real Redis and a real 3-master Redis Cluster (sharded pub/sub), presence
//! against the in-process default and Redis.

mod support;

use bytes::Bytes;
use socketchat::bus::{Bus, Inbox, RedisBus};
use socketchat::hub::{Event, EventKind, Topic};
use socketchat::presence::{LocalPresence, Presence, RedisPresence};
use socketchat::redis_client::{RedisClient, probe};
use socketchat::wire::{PresenceEvent, UserRef};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::cluster::{Redis, RedisCluster};
use tokio::sync::Notify;

/// An inbox that records what reaches it.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    wanted: Mutex<HashSet<u64>>,
    resyncs: AtomicUsize,
    changed: Notify,
}

impl Inbox for Recorder {
    fn handle_event(&self, event: Event) {
        self.events.lock().unwrap().push(event);
        self.changed.notify_waiters();
    }

    fn handle_resync(&self) {
        self.resyncs.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn wants(&self, room: u64) -> bool {
        self.wanted.lock().unwrap().contains(&room)
    }
}

impl Recorder {
    /// Waits until `done` holds for what was received.
    async fn until(&self, what: &str, done: impl Fn(&[Event], usize) -> bool) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if done(&self.events.lock().unwrap(), self.resyncs.load(Ordering::SeqCst)) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(15), wait).await.unwrap_or_else(|_| panic!("timed out: {what}"));
    }

    fn seqs(&self, room: u64) -> Vec<u64> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match (e.topic, e.kind) {
                (Topic::Room(r), EventKind::Message { seq }) if r == room => Some(seq),
                _ => None,
            })
            .collect()
    }
}

fn message(room: u64, seq: u64) -> Event {
    Event {
        topic: Topic::Room(room),
        kind: EventKind::Message { seq },
        from_user: 1,
        bytes: Bytes::from(format!("frame {room}/{seq}")),
    }
}

fn marker(n: u64) -> Event {
    Event { topic: Topic::Everyone, kind: EventKind::Presence, from_user: n, bytes: Bytes::from_static(b"p") }
}

async fn bus(url: &str) -> (RedisBus, Arc<Recorder>) {
    let target = probe(url).await.expect("redis answers");
    let commands = RedisClient::connect(&target).await.expect("connects");
    let recorder = Arc::new(Recorder::default());
    let bus = RedisBus::start(target, commands, recorder.clone());
    recorder.until("subscribed at start", |_, resyncs| resyncs >= 1).await;
    (bus, recorder)
}

/// Publishes markers from `from` until `to` receives one (pub/sub delivers nothing published
/// before a subscription is in place, which the relay's own reconnects make asynchronous).
async fn until_relayed(from: &RedisBus, to: &Recorder, start: u64) -> u64 {
    let mut n = start;
    loop {
        n += 1;
        from.publish(&marker(n));
        let seen = tokio::time::timeout(
            Duration::from_millis(300),
            to.until("marker", |events, _| events.iter().any(|e| e.topic == Topic::Everyone && e.from_user == n)),
        )
        .await;
        if seen.is_ok() {
            return n;
        }
        assert!(n < start + 100, "relay never recovered");
    }
}

async fn relay_contract(url: &str, subscribers: impl Fn(&str) -> usize) {
    let (a, ra) = bus(url).await;
    let (b, rb) = bus(url).await;

    // Interest: b receives a room only once subscribed; nobody gets its own events back.
    rb.wanted.lock().unwrap().insert(7);
    b.subscribe(7).await.unwrap();
    assert_eq!(subscribers("socketchat:room:7"), 1, "exactly b subscribes to room 7");
    assert_eq!(subscribers("socketchat:room:8"), 0, "nobody subscribes to a room without members");
    a.publish(&message(8, 1));
    for seq in 1..=200 {
        a.publish(&message(7, seq));
    }
    a.publish(&marker(1));
    rb.until("200 messages and the marker", |events, _| events.len() >= 201).await;
    assert_eq!(rb.seqs(7), (1..=200).collect::<Vec<_>>(), "one publisher's room stream arrives in order");
    assert!(rb.seqs(8).is_empty(), "room 8 was never subscribed");
    b.publish(&marker(2));
    ra.until("b's marker", |events, _| events.iter().any(|e| e.from_user == 2)).await;
    assert!(ra.seqs(7).is_empty(), "a does not subscribe to room 7");
    assert!(!ra.events.lock().unwrap().iter().any(|e| e.from_user == 1), "a never hears itself");

    // The last member leaves: the subscription goes.
    rb.wanted.lock().unwrap().remove(&7);
    b.unsubscribe(7);
    rb.wanted.lock().unwrap().insert(9);
    b.subscribe(9).await.unwrap();
    assert_eq!(subscribers("socketchat:room:7"), 0, "unsubscribed when the last member left");
    assert_eq!(subscribers("socketchat:room:9"), 1);

    // A flood of subscribe/unsubscribe settles on what the hub wants.
    for _ in 0..20 {
        rb.wanted.lock().unwrap().insert(11);
        b.unsubscribe(11);
        rb.wanted.lock().unwrap().remove(&11);
        b.unsubscribe(11);
    }
    rb.wanted.lock().unwrap().insert(11);
    b.subscribe(11).await.unwrap();
    assert_eq!(subscribers("socketchat:room:11"), 1);

    // Typing and revocations travel too.
    a.publish(&Event { topic: Topic::Room(9), kind: EventKind::Typing, from_user: 5, bytes: Bytes::from_static(b"t") });
    rb.until("typing", |events, _| events.iter().any(|e| e.kind == EventKind::Typing && e.from_user == 5)).await;
    a.flush().await;
    b.ping().await.expect("ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_contract_holds_on_redis_and_survives_a_killed_subscription() {
    let redis = Redis::start();
    let port = redis.port.to_string();
    let numsub = |channel: &str| -> usize {
        let out =
            std::process::Command::new("redis-cli").args(["-p", &port, "PUBSUB", "NUMSUB", channel]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    };
    relay_contract(&redis.url(), numsub).await;

    // A killed subscription connection comes back by itself and asks for a re-sync.
    let (a, _ra) = bus(&redis.url()).await;
    let (_b, rb) = bus(&redis.url()).await;
    let resyncs = rb.resyncs.load(Ordering::SeqCst);
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    rb.until("re-sync after reconnect", |_, n| n > resyncs).await;
    until_relayed(&a, &rb, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_contract_holds_on_a_redis_cluster_with_sharded_pub_sub() {
    let cluster = RedisCluster::start();
    let ports: Vec<String> = cluster.nodes.iter().map(|n| n.port.to_string()).collect();
    let shardnumsub = |channel: &str| -> usize {
        ports
            .iter()
            .map(|port| {
                let out = std::process::Command::new("redis-cli")
                    .args(["-p", port, "PUBSUB", "SHARDNUMSUB", channel])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
            })
            .sum()
    };
    relay_contract(&cluster.url(), shardnumsub).await;
}

fn user(id: u64, name: &str) -> UserRef {
    UserRef { id, username: name.into() }
}

fn went(events: &[PresenceEvent]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = events.iter().map(|e| (e.user.username.clone(), e.online)).collect();
    out.sort();
    out
}

/// What every presence backend does on one node.
async fn presence_contract(p: &dyn Presence) {
    let (alice, bob) = (user(1, "alice"), user(2, "bob"));
    assert_eq!(went(&p.connect(&alice).await.unwrap()), [("alice".into(), true)]);
    assert!(p.connect(&alice).await.unwrap().is_empty(), "a second tab changes nothing");
    assert_eq!(went(&p.connect(&bob).await.unwrap()), [("bob".into(), true)]);
    assert_eq!(p.online().await.unwrap(), vec![alice.clone(), bob.clone()]);
    assert!(p.disconnect(&alice).await.unwrap().is_empty(), "one tab still open");
    assert_eq!(went(&p.disconnect(&alice).await.unwrap()), [("alice".into(), false)]);
    assert_eq!(p.online().await.unwrap(), vec![bob.clone()]);
    assert_eq!(went(&p.disconnect(&bob).await.unwrap()), [("bob".into(), false)]);
    assert!(p.online().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_presence_contract_holds_in_process() {
    presence_contract(&LocalPresence::default()).await;
}

async fn redis_presence(redis: &Redis, node: &str, timeout_ms: u64) -> RedisPresence {
    let target = probe(&redis.url()).await.unwrap();
    let p = RedisPresence::new(RedisClient::connect(&target).await.unwrap(), node, Duration::from_millis(timeout_ms));
    p.upkeep().await.unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_contract_holds_on_redis_across_nodes_and_crashes() {
    let redis = Redis::start();
    let one = redis_presence(&redis, "one", 60_000).await;
    presence_contract(&one).await;

    // Across nodes: online while any node counts a connection.
    let two = redis_presence(&redis, "two", 60_000).await;
    let alice = user(1, "alice");
    assert_eq!(went(&one.connect(&alice).await.unwrap()), [("alice".into(), true)]);
    assert!(two.connect(&alice).await.unwrap().is_empty(), "already online on another node");
    assert!(one.disconnect(&alice).await.unwrap().is_empty(), "still connected on node two");
    assert_eq!(two.online().await.unwrap(), vec![alice.clone()]);

    // A node starting never touches other nodes' counts.
    let three = redis_presence(&redis, "three", 60_000).await;
    three.upkeep().await.unwrap();
    assert_eq!(one.online().await.unwrap(), vec![alice.clone()]);

    // A node that stops heartbeating is reaped exactly once, however many reap at once.
    let dying = redis_presence(&redis, "dying", 1_000).await;
    let bob = user(2, "bob");
    dying.connect(&bob).await.unwrap();
    dying.connect(&bob).await.unwrap();
    assert_eq!(one.online().await.unwrap(), vec![alice.clone(), bob.clone()]);
    let reapers: Vec<RedisPresence> = vec![
        redis_presence(&redis, "r1", 1_000).await,
        redis_presence(&redis, "r2", 1_000).await,
        redis_presence(&redis, "r3", 1_000).await,
    ];
    // Wait for the dying node's heartbeat to age past its timeout (Redis' clock decides).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut announced = Vec::new();
    while announced.is_empty() {
        assert!(std::time::Instant::now() < deadline, "never reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The live nodes keep heartbeating (the reapers judge every node by their timeout).
        for live in [&one, &two, &three] {
            announced.extend(live.upkeep().await.unwrap());
        }
        let rounds = futures_util::future::join_all(reapers.iter().map(|r| r.upkeep())).await;
        for round in rounds {
            announced.extend(round.unwrap());
        }
    }
    assert_eq!(went(&announced), [("bob".into(), false)], "bob went offline once, announced by one reaper");
    assert_eq!(one.online().await.unwrap(), vec![alice.clone()], "the live nodes' counts stay");
    drop(dying);

    // Redis loses everything (restart): the next upkeep writes the live counts back.
    redis.cli(&["FLUSHALL"]);
    assert!(one.online().await.unwrap().is_empty());
    let back = two.upkeep().await.unwrap();
    assert_eq!(went(&back), [("alice".into(), true)]);
    assert_eq!(one.online().await.unwrap(), vec![alice.clone()]);

    // A node that leaves takes its counts with it.
    assert_eq!(went(&two.leave().await.unwrap()), [("alice".into(), false)]);
    assert!(one.online().await.unwrap().is_empty());
}
