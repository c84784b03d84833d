//! Contract suites for the cluster backends, each run against every backend it has: the relay
//! (`Bus`) against a real Redis and a real 3-master Redis Cluster (sharded pub/sub), presence
//! against the in-process default and Redis.

mod support;

use bytes::Bytes;
use socketchat::bus::{Bus, Inbox, RedisBus};
use socketchat::hub::{Event, EventKind, Topic};
use socketchat::presence::{LocalPresence, Page, Presence, RedisPresence, Scope, Status, Transition};
use socketchat::redis_client::{RedisClient, probe};
use socketchat::store::{SqliteStore, Store};
use socketchat::wire::UserRef;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::cluster::{Redis, RedisCluster};
use support::unix_ms;
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

const ROOM: Scope = Scope::Room(1);
const ONLINE: Scope = Scope::Online;

fn went(transitions: &[Transition]) -> Vec<(Scope, String, bool)> {
    let mut out: Vec<_> = transitions.iter().map(|t| (t.scope, t.user.username.clone(), t.online)).collect();
    out.sort();
    out
}

fn t(scope: Scope, name: &str, online: bool) -> (Scope, String, bool) {
    (scope, name.to_owned(), online)
}

/// Usernames of a scope's first page, and its count.
async fn names(p: &dyn Presence, scope: Scope) -> (u64, Vec<String>) {
    let page = p.page(scope, None, 100).await.unwrap();
    (page.online, page.users.iter().map(|u| u.username.clone()).collect())
}

/// What every presence backend does on one node: counting tabs per scope, pages, last seen.
async fn presence_contract(p: &dyn Presence, alice: &UserRef, bob: &UserRef) {
    let (a, b) = (alice.username.as_str(), bob.username.as_str());
    assert_eq!(went(&p.enter(alice, &[ONLINE]).await.unwrap()), [t(ONLINE, a, true)]);
    assert!(p.enter(alice, &[ONLINE]).await.unwrap().is_empty(), "a second tab changes nothing");
    assert_eq!(went(&p.enter(alice, &[ROOM]).await.unwrap()), [t(ROOM, a, true)], "the first tab joins the room");
    assert!(p.enter(alice, &[ROOM]).await.unwrap().is_empty(), "so does the second");
    assert_eq!(went(&p.enter(bob, &[ONLINE, ROOM]).await.unwrap()), [t(ONLINE, b, true), t(ROOM, b, true)]);
    assert_eq!(names(p, ONLINE).await, (2, vec![a.to_owned(), b.to_owned()]));
    assert_eq!(names(p, ROOM).await, (2, vec![a.to_owned(), b.to_owned()]));
    assert_eq!(names(p, Scope::Room(2)).await, (0, vec![]), "another room");
    assert_eq!(p.page(ROOM, None, 1).await.unwrap(), Page { online: 2, users: vec![alice.clone()].into(), more: true });
    assert_eq!(
        p.page(ROOM, Some(a), 1).await.unwrap(),
        Page { online: 2, users: vec![bob.clone()].into(), more: false }
    );
    assert_eq!(p.page(ROOM, Some(b), 1).await.unwrap(), Page { online: 2, users: Vec::new().into(), more: false });
    let online = |id| Status { id, online: true, last_seen_ms: None };
    assert_eq!(
        p.status(&[alice.id, bob.id, 999]).await.unwrap(),
        [online(alice.id), online(bob.id), Status { id: 999, online: false, last_seen_ms: None }]
    );

    assert!(p.exit(alice, &[ROOM]).await.unwrap().is_empty(), "one tab left the room, the other is in it");
    assert!(p.exit(alice, &[ONLINE]).await.unwrap().is_empty(), "and closed; the other is open");
    let before = unix_ms();
    assert_eq!(went(&p.exit(alice, &[ONLINE, ROOM]).await.unwrap()), [t(ONLINE, a, false), t(ROOM, a, false)]);
    assert_eq!(names(p, ROOM).await, (1, vec![b.to_owned()]));
    let [status] = &p.status(&[alice.id]).await.unwrap()[..] else { panic!("one status") };
    let seen = status.last_seen_ms.expect("last seen");
    assert!(!status.online && seen >= before && seen <= unix_ms(), "{status:?}");
    assert!(p.exit(alice, &[ROOM]).await.unwrap().is_empty(), "an exit that was never entered changes nothing");
    assert_eq!(went(&p.exit(bob, &[ROOM, ONLINE]).await.unwrap()), [t(ONLINE, b, false), t(ROOM, b, false)]);
    assert_eq!(names(p, ONLINE).await, (0, vec![]));
}

#[tokio::test]
async fn the_presence_contract_holds_in_process_and_last_seen_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("chat.db")).unwrap());
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let record = store.create_user(name, &format!("{name}@example.com"), "hash").await.unwrap();
        users.push(user(record.id, name));
    }
    let p = LocalPresence::new(store.clone());
    presence_contract(&p, &users[0], &users[1]).await;
    let seen = p.status(&[users[0].id]).await.unwrap();
    p.upkeep().await.unwrap();
    assert_eq!(LocalPresence::new(store).status(&[users[0].id]).await.unwrap(), seen, "written to the store");
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
    presence_contract(&one, &user(1, "alice"), &user(2, "bob")).await;

    // Across nodes: in a scope while any node counts a connection there.
    let two = redis_presence(&redis, "two", 60_000).await;
    let alice = user(1, "alice");
    assert_eq!(
        went(&one.enter(&alice, &[ONLINE, ROOM]).await.unwrap()),
        [t(ONLINE, "alice", true), t(ROOM, "alice", true)]
    );
    assert!(two.enter(&alice, &[ONLINE, ROOM]).await.unwrap().is_empty(), "already in on another node");
    assert!(one.exit(&alice, &[ONLINE, ROOM]).await.unwrap().is_empty(), "still in on node two");
    assert_eq!(names(&two, ROOM).await, (1, vec!["alice".to_owned()]));

    // A node starting never touches other nodes' counts.
    let three = redis_presence(&redis, "three", 60_000).await;
    three.upkeep().await.unwrap();
    assert_eq!(names(&one, ONLINE).await, (1, vec!["alice".to_owned()]));

    // A node that stops heartbeating is reaped exactly once, however many reap at once: its
    // users leave their rooms and go offline, last seen at its last heartbeat.
    let dying = redis_presence(&redis, "dying", 1_000).await;
    let bob = user(2, "bob");
    dying.enter(&bob, &[ONLINE, ROOM]).await.unwrap();
    dying.enter(&bob, &[ONLINE, ROOM]).await.unwrap();
    let last_beat = unix_ms();
    assert_eq!(names(&one, ROOM).await, (2, vec!["alice".to_owned(), "bob".to_owned()]));
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
    assert_eq!(went(&announced), [t(ONLINE, "bob", false), t(ROOM, "bob", false)], "announced once, by one reaper");
    assert_eq!(names(&one, ROOM).await, (1, vec!["alice".to_owned()]), "the live nodes' counts stay");
    let [status] = &one.status(&[bob.id]).await.unwrap()[..] else { panic!("one status") };
    let seen = status.last_seen_ms.expect("last seen");
    assert!(!status.online && seen <= last_beat + 50 && seen + 1_000 >= last_beat, "{status:?} vs {last_beat}");
    drop(dying);

    // Redis loses everything (restart): the next upkeep writes the live counts back.
    redis.cli(&["FLUSHALL"]);
    assert_eq!(names(&one, ROOM).await, (0, vec![]));
    let back = two.upkeep().await.unwrap();
    assert_eq!(went(&back), [t(ONLINE, "alice", true), t(ROOM, "alice", true)]);
    assert_eq!(names(&one, ROOM).await, (1, vec!["alice".to_owned()]));
    assert_eq!(names(&one, ONLINE).await, (1, vec!["alice".to_owned()]));

    // A node that leaves takes its counts with it.
    assert_eq!(went(&two.leave().await.unwrap()), [t(ONLINE, "alice", false), t(ROOM, "alice", false)]);
    assert_eq!(names(&one, ROOM).await, (0, vec![]));
    assert!(!one.status(&[alice.id]).await.unwrap()[0].online);
}
