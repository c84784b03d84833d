//! The cluster, with real parts started by the harness: PostgreSQL, Redis, HAProxy running the
//! project's `haproxy.cfg`, and nodes in this process or as their own processes (to kill one).

mod support;

use socketchat::wire::{self, ClientFrame, ServerFrame};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use support::cluster::{Haproxy, ProcessNode, Redis};
use support::postgres::Postgres;
use support::*;

const SECRET: &str = "a test secret that is long enough for HS256 keys";

/// An in-process node on the shared database and Redis.
async fn node(pg: &Postgres, redis: &str) -> TestServer {
    let (db, redis) = (pg.url(), redis.to_owned());
    TestServer::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.database_url = Some(db);
        c.redis_url = Some(redis);
        c.jwt_secret = Some(SECRET.into());
        c.send_burst = 100_000;
        c.send_rate_per_sec = 100_000;
        c.node_timeout_ms = 2000;
    })
    .await
}

fn process_env(pg: &Postgres, redis: &Redis) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", pg.url()),
        ("REDIS_URL", redis.url()),
        ("JWT_SECRET", SECRET.into()),
        ("SOCKETCHAT_SEND_BURST", "100000".into()),
        ("SOCKETCHAT_SEND_RATE", "100000".into()),
        ("SOCKETCHAT_TRUSTED_PROXIES", "127.0.0.1".into()),
    ]
}

fn cmid(client: usize, n: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(client as u64).to_be_bytes());
    id[8..].copy_from_slice(&(n as u64).to_be_bytes());
    id
}

fn send_frame(room: &str, id: [u8; 16], text: &str) -> ClientFrame {
    ClientFrame::Send(wire::Send { room: room.into(), client_msg_id: id, text: text.into(), attachments: Vec::new() })
}

/// Source addresses 127.0.0.2… grouped by the node HAProxy sends them to (told apart by the
/// WebTransport URL each node publishes in `/api/transport`).
async fn sources_by_node(proxy: SocketAddr) -> HashMap<String, Vec<IpAddr>> {
    let mut groups: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for last in 2..=40u8 {
        let ip = IpAddr::from([127, 0, 0, last]);
        let client = reqwest::Client::builder().local_address(ip).build().unwrap();
        let info: serde_json::Value =
            client.get(format!("http://{proxy}/api/transport")).send().await.unwrap().json().await.unwrap();
        groups.entry(info["webtransport"].as_str().unwrap_or_default().to_owned()).or_default().push(ip);
    }
    assert_eq!(groups.len(), 2, "source hashing spreads 39 addresses over both nodes: {groups:?}");
    groups
}

/// Hello, then Welcome.
async fn greet(client: &mut Client) {
    client.hello().await;
    client.recv_until(|f| matches!(f, ServerFrame::Welcome(_)).then_some(())).await;
}

/// Usernames `GET /api/presence/online` lists, sorted.
async fn online(server: &TestServer, token: &str) -> Vec<String> {
    let body: serde_json::Value = server.get("/api/presence/online", token).await.json().await.unwrap();
    let mut names: Vec<String> =
        body["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

/// Reads until `count` messages of `room` arrived; returns their seqs as received.
async fn collect_seqs(client: &mut impl Frames, count: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(count);
    while seqs.len() < count {
        seqs.push(client.recv_until(pick::message).await.seq);
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_nodes_behind_haproxy_get_every_message_once_in_order_and_resume_anywhere() {
    const PER_CLIENT: usize = 40;
    let pg = Postgres::start();
    let redis = Redis::start();
    let (a, b) = (node(&pg, &redis.url()).await, node(&pg, &redis.url()).await);
    let proxy = Haproxy::start(a.addr, b.addr);
    let groups = sources_by_node(proxy.addr).await;
    let sources: Vec<IpAddr> = groups.values().flat_map(|ips| ips.iter().take(2).copied()).collect();
    let token = register_at(&reqwest::Client::new(), proxy.addr, "alice").await;

    let mut clients = Vec::new();
    for ip in &sources {
        let mut c = Client::connect_from(proxy.addr, *ip, &token).await.expect("upgrade through haproxy");
        greet(&mut c).await;
        let (joined, _) = join_and_replay(&mut c, "general", None).await;
        assert_eq!(joined.head_seq, 0);
        clients.push(c);
    }
    assert!(a.running.as_ref().unwrap().node().hub.connections() >= 2, "clients on node a");
    assert!(b.running.as_ref().unwrap().node().hub.connections() >= 2, "clients on node b");

    let total = PER_CLIENT * clients.len();
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..PER_CLIENT {
                c.send(&send_frame("general", cmid(i, n), &format!("{i}/{n}"))).await;
            }
            let seqs = collect_seqs(&mut c, total).await;
            (c, seqs)
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        let (c, seqs) = task.await.unwrap();
        assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>(), "every message once, in seq order");
        clients.push(c);
    }

    // Resume on either node after sends on the other returns exactly what was missed.
    let away = clients.remove(0);
    away.close().await;
    let mut sender = clients.pop().unwrap();
    for n in 0..10 {
        sender.send(&send_frame("general", cmid(99, n), "while away")).await;
        // Acks of the earlier sends may still be on their way (a connection's sends are
        // pipelined, and its acks can come after the messages it read): wait for this one.
        let id = cmid(99, n);
        sender.recv_until(|f| matches!(f, ServerFrame::Ack(a) if a.client_msg_id == id).then_some(())).await;
    }
    for server in [&a, &b] {
        let (mut back, _) = server.connect_hello(&token).await;
        let (joined, replay) = join_and_replay(&mut back, "general", Some(total as u64)).await;
        assert_eq!(joined.head_seq, total as u64 + 10);
        let seqs: Vec<u64> = replay.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (total as u64 + 1..=total as u64 + 10).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_msg_id_sent_to_two_nodes_at_once_is_stored_once_with_identical_acks() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let (a, b) = (node(&pg, &redis.url()).await, node(&pg, &redis.url()).await);
    let token = a.register("alice").await;
    let (mut on_a, _) = a.connect_hello(&token).await;
    let (mut on_b, _) = b.connect_hello(&token).await;
    join_and_replay(&mut on_a, "design", None).await;
    join_and_replay(&mut on_b, "design", None).await;
    for n in 0..20 {
        let frame = send_frame("design", cmid(7, n), &format!("race {n}"));
        let ((), ()) = tokio::join!(on_a.send(&frame), on_b.send(&frame));
        let (ack_a, ack_b) = tokio::join!(ack(&mut on_a), ack(&mut on_b));
        assert_eq!(ack_a, ack_b, "identical acks on both nodes");
        assert_eq!(ack_a.seq, n as u64 + 1, "a duplicate never consumes a seq");
    }
    let page: serde_json::Value = a.get("/api/channels/design/messages?limit=100", &token).await.json().await.unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 20, "one row per client_msg_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_node_closes_the_token_elsewhere_and_a_ticket_works_once_on_another_node() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let (a, b) = (node(&pg, &redis.url()).await, node(&pg, &redis.url()).await);
    let token = a.register("alice").await;
    // A bare WebSocket: the test reads the close frame's code too.
    let (mut on_b, _) = b.connect_hello_raw(&token).await;
    let logout =
        a.http.post(a.url("/api/auth/logout")).header("cookie", format!("token={token}")).send().await.unwrap();
    assert_eq!(logout.status(), 204);
    assert_eq!(on_b.expect_close().await, (Some(4505), Some(4505)), "closed on node b at once");

    let login = a
        .http
        .post(a.url("/api/auth/login"))
        .json(&serde_json::json!({"email": "alice@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    let token = token_from(&login).unwrap();
    let ticket = wt::ticket(&a, &token, None).await;
    let mut session = wt::wt_connect(&b, &format!("?ticket={ticket}"), &[]).await.expect("a ticket from a works on b");
    assert_eq!(session.hello().await.user.username, "alice");
    let again = wt::wt_connect(&a, &format!("?ticket={ticket}"), &[]).await;
    let refused = match again {
        Err(_) => true,
        Ok(mut s) => s.next().await.is_none(),
    };
    assert!(refused, "a ticket works once, on any node");
    // Made-up, malformed and oversized tickets are refused before Redis is asked.
    for forged in ["0".repeat(48), "zz".into(), "a".repeat(4000), "*".into()] {
        let attempt = wt::wt_connect(&b, &format!("?ticket={forged}"), &[]).await;
        let refused = match attempt {
            Err(_) => true,
            Ok(mut s) => s.next().await.is_none(),
        };
        assert!(refused, "forged ticket {:.20}… refused", forged);
    }
    // A ticket bought from one page's Origin does not work from another page (each node's own
    // origin passes the Origin check; the ticket's binding is what refuses it).
    let bound = wt::ticket(&a, &token, Some(&format!("http://{}", a.addr))).await;
    let foreign = wt::wt_connect(&b, &format!("?ticket={bound}"), &[("origin", format!("http://{}", b.addr))]).await;
    let refused = match foreign {
        Err(_) => true,
        Ok(mut s) => s.next().await.is_none(),
    };
    assert!(refused, "a ticket is bound to its Origin");
}

#[tokio::test]
async fn cluster_settings_that_cannot_work_are_refused_at_start_without_echoing_secrets() {
    let refused = |tweak: fn(&mut socketchat::config::Config)| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut config = socketchat::config::Config::embedded("127.0.0.1:0".parse().unwrap(), dir.path().into());
        config.database_url = Some("postgres://postgres@127.0.0.1:1/never".into());
        config.redis_url = Some("redis://127.0.0.1:1".into());
        config.jwt_secret = Some(SECRET.into());
        tweak(&mut config);
        match socketchat::server::start(config).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started with a setting that cannot work"),
        }
    };
    let e = refused(|c| c.redis_url = Some("redis://:hunter2@127.0.0.1:notaport".into())).await;
    assert!(e.contains("REDIS_URL") && !e.contains("hunter2"), "{e}");
    let e = refused(|c| c.redis_url = Some("http://127.0.0.1:6379".into())).await;
    assert!(e.contains("REDIS_URL"), "{e}");
    let e = refused(|c| c.redis_url = Some(" , ".into())).await;
    assert!(e.contains("REDIS_URL is empty"), "{e}");
    let e = refused(|c| c.database_url = None).await;
    assert!(e.contains("REDIS_URL needs DATABASE_URL"), "{e}");
    let e = refused(|c| c.jwt_secret = None).await;
    assert!(e.contains("JWT_SECRET is required"), "{e}");
    let e = refused(|c| c.node_timeout_ms = 10).await;
    assert!(e.contains("node timeout"), "{e}");
    let e = refused(|c| c.max_lag_ms = 50).await;
    assert!(e.contains("maximum lag must be at least 100 ms"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_nodes_are_unready_refuse_tickets_and_still_store_and_deliver_everything() {
    let pg = Postgres::start();
    let mut redis = Redis::start();
    let (a, b) = (node(&pg, &redis.url()).await, node(&pg, &redis.url()).await);
    let token = a.register("alice").await;
    let (mut sender, _) = a.connect_hello(&token).await;
    let (mut receiver, _) = b.connect_hello(&token).await;
    join_and_replay(&mut sender, "general", None).await;
    join_and_replay(&mut receiver, "general", None).await;
    redis.stop();
    // The relay notices the lost connection (EOF at once, or its ping within seconds).
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.http.get(a.url("/readyz")).send().await.unwrap().status() != 503 {
        assert!(Instant::now() < deadline, "readyz stayed 200 with Redis down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ticket =
        a.http.post(a.url("/api/auth/ticket")).header("cookie", format!("token={token}")).send().await.unwrap();
    assert_eq!(ticket.status(), 503, "no ticket that other nodes could not redeem");
    assert_eq!(ticket.headers().get("retry-after").unwrap(), "1");
    // Sends are still stored and acked, and reach the other node through the head check.
    for n in 0..20 {
        sender.send(&send_frame("general", cmid(3, n), "while redis is down")).await;
        ack(&mut sender).await;
    }
    assert_eq!(collect_seqs(&mut receiver, 20).await, (1..=20).collect::<Vec<_>>());
    redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.http.get(a.url("/readyz")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "readyz never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sender.send(&send_frame("general", cmid(3, 20), "after")).await;
    ack(&mut sender).await;
    assert_eq!(collect_seqs(&mut receiver, 1).await, vec![21]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_on_one_node_reaches_members_on_the_other_only() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let (a, b) = (node(&pg, &redis.url()).await, node(&pg, &redis.url()).await);
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let carol = a.register("carol").await;
    let (mut typist, _) = a.connect_hello(&alice).await;
    let (mut member, _) = b.connect_hello(&bob).await;
    let (mut elsewhere, _) = b.connect_hello(&carol).await;
    join_and_replay(&mut typist, "engineering", None).await;
    join_and_replay(&mut member, "engineering", None).await;
    join_and_replay(&mut elsewhere, "design", None).await;
    typist.send(&ClientFrame::Typing(wire::TypingUpdate { room: "engineering".into(), active: true })).await;
    let seen = member.recv_until(pick::typing).await;
    assert_eq!((seen.user.username.as_str(), seen.active), ("alice", true));
    // Carol is on node b but not in the room: a ping answered first proves nothing came.
    elsewhere.send(&ClientFrame::Ping(wire::Ping { nonce: 9 })).await;
    let first = elsewhere
        .recv_until(|f| match f {
            ServerFrame::Typing(_) => Some(false),
            ServerFrame::Pong(_) => Some(true),
            _ => None,
        })
        .await;
    assert!(first, "typing reaches room members only");
}

/// Alice makes the private channel `ops` on `node` and invites bob.
async fn ops_with_bob(node: &TestServer, alice: &str) {
    let (made, _) =
        node.call("POST", "/api/channels", alice, serde_json::json!({"name": "ops", "private": true})).await;
    assert_eq!(made, 201);
    let (invited, _) =
        node.call("POST", "/api/channels/ops/members", alice, serde_json::json!({"username": "bob"})).await;
    assert_eq!(invited, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_channel_made_on_one_node_is_used_on_the_other_and_a_removal_there_takes_effect_at_once() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let (a, b) = (node(&pg, &redis.url()).await, node(&pg, &redis.url()).await);
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let carol = a.register("carol").await;
    ops_with_bob(&a, &alice).await;

    // Node b never saw the room being made: it finds it, and only for members.
    let (mut owner, _) = a.connect_hello(&alice).await;
    let (mut member, _) = b.connect_hello(&bob).await;
    let (mut outsider, _) = b.connect_hello(&carol).await;
    join_and_replay(&mut owner, "ops", None).await;
    join_and_replay(&mut member, "ops", None).await;
    join_and_replay(&mut member, "general", None).await;
    outsider.send(&join("ops", None)).await;
    let refused = outsider.recv_until(pick::error).await;
    assert_eq!(refused.code, wire::ErrorCode::UnknownRoom.code());
    owner.send(&send("ops", 1, "on a")).await;
    ack(&mut owner).await;
    assert_eq!(message(&mut member).await.text, "on a");

    // Removed through node a: bob's connection on node b leaves the room at once.
    let (removed, _) = a.call("DELETE", "/api/channels/ops/members/bob", &alice, serde_json::Value::Null).await;
    assert_eq!(removed, 204);
    let left = member.recv_until(|f| if let ServerFrame::Left(l) = f { Some(l) } else { None }).await;
    assert_eq!(left.room, "ops");
    member.send(&send("ops", 2, "still in?")).await;
    let refused = member.recv_until(pick::error).await;
    assert_eq!(refused.code, wire::ErrorCode::NotMember.code());
    member.send(&join("ops", None)).await;
    let refused = member.recv_until(pick::error).await;
    assert_eq!(refused.code, wire::ErrorCode::UnknownRoom.code(), "a rejoin is refused on node b too");
    assert_eq!(b.get("/api/channels/ops/messages", &bob).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_whose_event_the_relay_lost_takes_effect_once_the_relay_is_back() {
    let pg = Postgres::start();
    let mut redis = Redis::start();
    let (a, b) = (node(&pg, &redis.url()).await, node(&pg, &redis.url()).await);
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    ops_with_bob(&a, &alice).await;
    let (mut member, _) = b.connect_hello(&bob).await;
    join_and_replay(&mut member, "ops", None).await;

    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.http.get(b.url("/readyz")).send().await.unwrap().status() != 503 {
        assert!(Instant::now() < deadline, "readyz stayed 200 with Redis down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The removal is stored; its event cannot cross to node b.
    let (removed, _) = a.call("DELETE", "/api/channels/ops/members/bob", &alice, serde_json::Value::Null).await;
    assert_eq!(removed, 204);
    redis.start_again();
    // Once b's relay is back it re-checks its closed rooms' members: bob is out.
    let left = member.recv_until(|f| if let ServerFrame::Left(l) = f { Some(l) } else { None }).await;
    assert_eq!(left.room, "ops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_and_a_stalled_subscriber_lose_nothing_and_keep_the_order() {
    const SENDS: usize = 300;
    let pg = Postgres::start();
    let mut redis = Redis::start();
    let (a, b) = (node(&pg, &redis.url()).await, node(&pg, &redis.url()).await);
    let token = a.register("alice").await;
    let (mut receiver, _) = b.connect_hello(&token).await;
    join_and_replay(&mut receiver, "support", None).await;
    let (mut sender, _) = a.connect_hello(&token).await;
    join_and_replay(&mut sender, "support", None).await;
    let reading = tokio::spawn(async move { collect_seqs(&mut receiver, SENDS).await });

    for n in 0..SENDS {
        sender.send(&send_frame("support", cmid(1, n), &format!("m{n}"))).await;
        ack(&mut sender).await;
        if n == 100 {
            redis.stop();
        }
        if n == 150 {
            redis.start_again();
        }
        if n == 200 || n == 220 || n == 240 {
            // Cut the relay's subscription connections; they reconnect by themselves.
            redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        }
    }
    let seqs = tokio::time::timeout(Duration::from_secs(30), reading).await.expect("all delivered").unwrap();
    assert_eq!(seqs, (1..=SENDS as u64).collect::<Vec<_>>(), "no loss, no duplicate, in order");
    assert!(b.metric("relay_received_total").await > 0, "node b received relayed events");
    assert!(b.metric("relay_connects_total").await >= 2, "node b's subscription came back after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_starting_leaves_the_first_nodes_presence_untouched() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let a = node(&pg, &redis.url()).await;
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let (mut alice_conn, _) = a.connect_hello(&alice).await;
    let (mut bob_conn, _) = a.connect_hello(&bob).await;
    join_and_replay(&mut alice_conn, "general", None).await;
    join_and_replay(&mut bob_conn, "general", None).await;
    while room_presence(&mut alice_conn, "general").await.0 != 2 {}
    assert_eq!(online(&a, &alice).await, ["alice", "bob"]);
    let b = node(&pg, &redis.url()).await;
    // Wait for the new node's first upkeep (registration and reaping): it is in the node set.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.cli(&["ZCARD", "{socketchat:presence}:nodes"]).trim() != "2" {
        assert!(Instant::now() < deadline, "second node registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And one full node timeout more, with upkeep and reaping on both nodes all along.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(online(&b, &alice).await, ["alice", "bob"], "seen from the new node");
    assert_eq!(online(&a, &alice).await, ["alice", "bob"], "untouched on the first");
    alice_conn.send(&ClientFrame::Ping(wire::Ping { nonce: 5 })).await;
    let fewer = alice_conn
        .recv_until(|f| match f {
            ServerFrame::RoomPresence(p) if p.online < 2 => Some(true),
            ServerFrame::Pong(_) => Some(false),
            _ => None,
        })
        .await;
    assert!(!fewer, "nobody left the room");
    let in_room: serde_json::Value = b.get("/api/presence/rooms/general", &alice).await.json().await.unwrap();
    assert_eq!(in_room["online"], 2, "the room's presence, seen from the new node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_goes_offline_within_15_s_and_its_clients_resume_on_the_other_node_through_haproxy() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let env = process_env(&pg, &redis);
    let mut n1 = ProcessNode::start("n1", &env);
    let n2 = ProcessNode::start("n2", &env);
    let proxy = Haproxy::start(n1.addr, n2.addr);
    let groups = sources_by_node(proxy.addr).await;
    let n1_url = {
        let info: serde_json::Value =
            reqwest::get(format!("http://{}/api/transport", n1.addr)).await.unwrap().json().await.unwrap();
        info["webtransport"].as_str().unwrap().to_owned()
    };
    let victim_ip = groups[&n1_url][0];
    let survivor_ip = groups.iter().find(|(url, _)| **url != n1_url).unwrap().1[0];

    let victim_token = register_at(&reqwest::Client::new(), proxy.addr, "victim").await;
    let observer_token = register_at(&reqwest::Client::new(), proxy.addr, "observer").await;
    let mut observer = Client::connect_from(proxy.addr, survivor_ip, &observer_token).await.unwrap();
    greet(&mut observer).await;
    join_and_replay(&mut observer, "general", None).await;
    let mut victim = Client::connect_from(proxy.addr, victim_ip, &victim_token).await.unwrap();
    greet(&mut victim).await;
    join_and_replay(&mut victim, "general", None).await;

    // Traffic from both sides; the victim keeps what it saw and what was acked.
    let mut victim_seen = Vec::new();
    for n in 0..30 {
        observer.send(&send_frame("general", cmid(1, n), "from the survivor")).await;
        victim.send(&send_frame("general", cmid(2, n), "from the victim")).await;
    }
    while victim_seen.len() < 40 {
        victim_seen.push(victim.recv_until(pick::message).await.seq);
    }
    // The observer (on the other node) sees the victim in the room before the kill.
    while !room_presence(&mut observer, "general").await.1.contains(&"victim".to_owned()) {}
    n1.kill();
    let killed = Instant::now();

    // The observer sees the victim leave the room, within 15 s (it pings to stay connected).
    loop {
        assert!(killed.elapsed() < Duration::from_secs(15), "still in the room after 15 s");
        match tokio::time::timeout(Duration::from_secs(2), observer.recv()).await {
            Ok(ServerFrame::RoomPresence(p))
                if p.room == "general" && p.users.iter().all(|u| u.username != "victim") =>
            {
                assert_eq!(p.online, 1);
                break;
            }
            Ok(_) => {}
            Err(_) => observer.send(&ClientFrame::Ping(wire::Ping { nonce: 1 })).await,
        }
    }
    assert!(killed.elapsed() < Duration::from_secs(15), "offline after {:?}", killed.elapsed());
    // Offline, and last seen at the dead node's last heartbeat: at most a fifth of the node
    // timeout before the kill.
    let me = get_json_at(n2.addr, "/api/auth/me", &victim_token).await;
    let victim_id = me["user"]["id"].as_u64().unwrap();
    let status = get_json_at(n2.addr, &format!("/api/presence/users?ids={victim_id}"), &observer_token).await;
    assert_eq!(status["users"][0]["online"], false);
    let seen = status["users"][0]["last_seen_ms"].as_u64().expect("a last-seen time");
    let killed_ms = unix_ms() - killed.elapsed().as_millis() as u64;
    assert!(seen <= killed_ms + 50 && seen + 3_000 >= killed_ms, "last seen {seen}, killed at {killed_ms}");

    // The victim's client reconnects through HAProxy (to the survivor), resumes from its last
    // seq and retries every send (same ids): nothing missing, nothing twice.
    let mut back = loop {
        match Client::connect_from(proxy.addr, victim_ip, &victim_token).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    greet(&mut back).await;
    let last = *victim_seen.last().unwrap();
    let (joined, replay) = join_and_replay(&mut back, "general", Some(last)).await;
    victim_seen.extend(replay.iter().map(|m| m.seq));
    for n in 0..30 {
        back.send(&send_frame("general", cmid(2, n), "from the victim")).await;
    }
    let mut acks = 0;
    while acks < 30 {
        match back.recv().await {
            ServerFrame::Ack(_) => acks += 1,
            ServerFrame::Message(m) => victim_seen.push(m.seq),
            _ => {}
        }
    }
    let head: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/api/channels", n2.addr))
        .header("cookie", format!("token={victim_token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let head = head["channels"].as_array().unwrap().iter().find(|c| c["name"] == "general").unwrap()["head_seq"]
        .as_u64()
        .unwrap();
    assert_eq!(head, 60, "every send stored once");
    while victim_seen.len() < head as usize {
        victim_seen.push(back.recv_until(pick::message).await.seq);
    }
    assert!(joined.head_seq >= last);
    assert_eq!(victim_seen, (1..=head).collect::<Vec<_>>(), "nothing missing, nothing twice");
    drop(n2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_turns_unready_sends_goaway_removes_its_presence_and_exits() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let mut env = process_env(&pg, &redis);
    env.push(("SOCKETCHAT_DRAIN_DELAY_MS", "1500".into()));
    let mut n1 = ProcessNode::start("drainme", &env);
    let n2 = ProcessNode::start("stays", &env);
    let proxy = Haproxy::start(n1.addr, n2.addr);
    let token = register_at(&reqwest::Client::new(), proxy.addr, "alice").await;
    let mut on_n1 = Client::connect(n1.addr, Some(&token), None).await.unwrap();
    greet(&mut on_n1).await;
    join_and_replay(&mut on_n1, "general", None).await;
    on_n1.send(&send_frame("general", cmid(1, 1), "before the drain")).await;
    ack(&mut on_n1).await;
    let members = redis.cli(&["ZRANGE", "{socketchat:presence}:nodes", "0", "-1"]);
    assert!(members.contains("drainme-"), "registered: {members}");

    let pid_exit = std::thread::spawn(move || {
        let status = n1.terminate();
        (status, n1)
    });
    // Unready first (HAProxy stops sending new connections), then GoAway 4000.
    let ready = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status =
            ready.get(format!("http://{}/readyz", on_n1_addr(&on_n1))).send().await.map(|r| r.status().as_u16());
        if status.ok() == Some(503) {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never answered 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(on_n1.expect_close().await, (Some(4000), Some(4000)));
    let (status, _n1) = pid_exit.join().unwrap();
    assert!(status.success(), "exits cleanly: {status:?}");
    let members = redis.cli(&["ZRANGE", "{socketchat:presence}:nodes", "0", "-1"]);
    assert!(!members.contains("drainme-"), "its presence is removed: {members}");
    // Its client moves through HAProxy to the other node and resumes there.
    let mut moved = Client::connect(proxy.addr, Some(&token), None).await.expect("haproxy routes to the other node");
    greet(&mut moved).await;
    let (joined, replay) = join_and_replay(&mut moved, "general", Some(0)).await;
    assert_eq!((joined.head_seq, replay.len()), (1, 1));
}

fn on_n1_addr(client: &Client) -> SocketAddr {
    client.ws.get_ref().peer_addr().unwrap()
}
