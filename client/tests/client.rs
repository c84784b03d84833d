//! The client library against the real server (embedded mode, in this process), over both
//! transports, and across a server restart.

use socketchat::config::{Config, MaybeAddr};
use socketchat::server::{self, Running};
use socketchat::wire::{ErrorCode, MessageKind, ServerFrame};
use socketchat_client::{Account, Client, ClientError, Connection, Credentials, Transport};
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn start(dir: &std::path::Path, listen: SocketAddr, webtransport: bool) -> Running {
    start_wt(dir, listen, webtransport.then(|| SocketAddr::new(listen.ip(), 0))).await
}

/// Like `start`, with WebTransport on `wt` (none: off).
async fn start_wt(dir: &std::path::Path, listen: SocketAddr, wt: Option<SocketAddr>) -> Running {
    let mut config = Config::embedded(listen, dir.to_path_buf());
    config.auth_burst = 1000;
    config.wt_listen = MaybeAddr(wt);
    server::start(config).await.expect("server starts")
}

/// A fresh server (its data directory, kept alive with it) and its base URL.
async fn fresh(webtransport: bool) -> (tempfile::TempDir, Running, String) {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), "127.0.0.1:0".parse().unwrap(), webtransport).await;
    let base = format!("http://{}", running.local_addr());
    (dir, running, base)
}

async fn account(base: &str, name: &str) -> Account {
    Account::register(base, name, &format!("{name}@example.com"), "correct horse battery").await.unwrap()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn two_users_talk_over_websocket_and_webtransport_with_edits_and_history() {
    let (_dir, running, base) = fresh(true).await;
    let alice = account(&base, "alice").await;
    let bob = account(&base, "bob").await;
    let over_ws = alice.websocket().await.unwrap();
    let over_wt = bob.webtransport().await.unwrap().expect("the server offers WebTransport");

    let mut a = Client::connect(over_ws, &alice.token, "client-test").await.unwrap();
    let mut b = Client::connect(over_wt, &bob.token, "client-test").await.unwrap();
    assert!(a.join("general", None).await.unwrap().is_empty());
    assert!(b.join("general", None).await.unwrap().is_empty());

    let ack = a.send("general", "hello from a native client", vec![]).await.unwrap();
    assert_eq!(ack.seq, 1);
    let got = within("message over WebTransport", b.next_message()).await.unwrap();
    assert_eq!((got.seq, got.text.as_str(), got.sender.username.as_str()), (1, "hello from a native client", "alice"));

    let edit = a.edit("general", 1, "hello, edited").await.unwrap();
    let got = within("edit", b.next_message()).await.unwrap();
    assert_eq!((got.kind, got.target_seq, got.seq), (MessageKind::Edit, Some(1), edit.seq));
    match b.edit("general", 1, "not mine").await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::BadRequest.code()),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Joined already: nothing is sent again, and what comes next still comes once.
    assert!(b.join("general", Some(0)).await.unwrap().is_empty());
    let page = b.history("general", None, 10).await.unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hello, edited", "hello, edited"], "the post as edited, then the edit event");
    assert_eq!(page.next_before, None);

    b.mark_read("general", 2).await.unwrap();
    let state = within("read state", async {
        loop {
            if let ServerFrame::ReadState(r) = b.next_event().await.unwrap() {
                return r;
            }
        }
    })
    .await;
    assert_eq!(state.last_read_seq, 2);
    a.close().await;
    b.close().await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_server_restart_loses_nothing_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), "127.0.0.1:0".parse().unwrap(), false).await;
    let addr = running.local_addr();
    let base = format!("http://{addr}");
    let alice = account(&base, "alice").await;
    let bob = account(&base, "bob").await;
    let endpoint = alice.websocket().await.unwrap();
    let mut reader = Client::connect(endpoint.clone(), &bob.token, "reader").await.unwrap();
    let mut writer = Client::connect(endpoint, &alice.token, "writer").await.unwrap();
    reader.join("design", None).await.unwrap();
    writer.join("design", None).await.unwrap();
    // A private room the reader is in, and will be removed from while the server is down.
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}")).header("cookie", format!("token={}", alice.token)).json(&body).send()
    };
    assert_eq!(post("/api/channels", serde_json::json!({"name": "ops", "private": true})).await.unwrap().status(), 201);
    assert_eq!(post("/api/channels/ops/members", serde_json::json!({"username": "bob"})).await.unwrap().status(), 201);
    reader.join("ops", None).await.unwrap();
    for n in 1..=10 {
        writer.send("design", &format!("m{n}"), vec![]).await.unwrap();
    }

    // The server goes away (GoAway 4000) and comes back on the same address and data; in
    // between, the reader lost its membership of `ops`.
    running.shutdown().await;
    {
        use socketchat::store::Store;
        let store = socketchat::store::SqliteStore::open(&dir.path().join("socketchat.db")).unwrap();
        let ops = store.room_by_name("ops").await.unwrap().unwrap();
        assert!(store.remove_member(ops.id, bob.id).await.unwrap());
        // 700 more messages while it is down: more than a join replays (500), so the reader
        // fetches the first 200 of them with History.
        let design = store.room_by_name("design").await.unwrap().unwrap();
        let sender = socketchat::wire::UserRef { id: alice.id, username: alice.username.clone() };
        let batch = (11..=710u64)
            .map(|n| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&n.to_be_bytes());
                socketchat::store::NewMessage::post(design.id, &sender, id, format!("m{n}"))
            })
            .collect();
        assert_eq!(store.append(batch).await.unwrap().len(), 700);
    }
    let running = start(dir.path(), addr, false).await;
    for n in 711..=720 {
        writer.send("design", &format!("m{n}"), vec![]).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 720 {
        let m = within("every message once", reader.next_message()).await.unwrap();
        seen.push((m.seq, m.text));
    }
    let expected: Vec<(u64, String)> = (1..=720).map(|n| (n, format!("m{n}"))).collect();
    assert_eq!(seen, expected, "in order, once each, across the restart and past the replay's cut");
    assert!(reader.reconnects() >= 1 && writer.reconnects() >= 1);
    assert_eq!(reader.left_out(), 0, "the 200 beyond the replay are within the fill's limit");
    assert_eq!(reader.last_seq("ops"), None, "the room it was removed from is not joined again");

    // Stored once each: the newest page ends at 720, with the 10 sent after the restart.
    let mut check = Connection::open(&alice.websocket().await.unwrap(), &alice.token, "check").await.unwrap();
    let page = check.history("design", None, 100).await.unwrap();
    let newest: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(newest, (621..=720).collect::<Vec<_>>());
    check.close().await;
    running.shutdown().await;
}

#[tokio::test]
async fn frames_nobody_takes_are_bounded_and_the_drop_is_reported_once() {
    let (_dir, running, base) = fresh(false).await;
    let alice = account(&base, "alice").await;
    let bob = account(&base, "bob").await;
    let endpoint = alice.websocket().await.unwrap();
    let mut a = Connection::open(&endpoint, &alice.token, "only-requests").await.unwrap();
    let mut b = Connection::open(&endpoint, &bob.token, "talker").await.unwrap();
    a.join("design", None).await.unwrap();
    b.join("design", None).await.unwrap();
    a.set_event_limit(3);
    // Bob's five messages reach Alice's connection before the acks of Bob's sends come back.
    for n in 1..=5u8 {
        b.store(send("design", n, &format!("b{n}"))).await.unwrap();
    }
    // Alice only makes a request: the five wait in front of her ack, and only 3 are kept.
    a.store(send("design", 100, "a1")).await.unwrap();
    assert_eq!(a.pending_events(), 3, "the backlog is bounded");
    match a.next_event().await {
        Err(e @ ClientError::Dropped(_)) => {
            assert!(e.reconnectable(), "a new connection resumes from the last seq");
            assert!(matches!(e, ClientError::Dropped(n) if n >= 3), "{e}");
        }
        other => panic!("expected the drop to be reported first, got {other:?}"),
    }
    // Then the newest frames, in order: what was dropped is the oldest (b1 at least), and b5
    // comes right before Alice's own message.
    let mut texts = Vec::new();
    loop {
        if let ServerFrame::Message(m) = within("Alice's own message", a.next_event()).await.unwrap() {
            let own = m.text == "a1";
            texts.push(m.text);
            if own {
                break;
            }
        }
    }
    assert!(!texts.contains(&"b1".to_owned()), "{texts:?}");
    assert_eq!(texts[texts.len().saturating_sub(2)..], ["b5".to_owned(), "a1".to_owned()], "{texts:?}");
    a.close().await;
    b.close().await;
    running.shutdown().await;
}

#[tokio::test]
async fn over_webtransport_a_ticket_is_bought_for_every_connection_and_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    // A fixed UDP port, so that the endpoint stays right across the restart below.
    let wt = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let running = start_wt(dir.path(), "127.0.0.1:0".parse().unwrap(), Some(wt)).await;
    let addr = running.local_addr();
    let base = format!("http://{addr}");
    let alice = account(&base, "alice").await;
    let bob = account(&base, "bob").await;
    let over_wt = alice.webtransport().await.unwrap().expect("the server offers WebTransport");
    let by_ticket = Credentials::Ticket(alice.clone());

    // Never the token in a log line made of these.
    for shown in [format!("{by_ticket:?}"), format!("{alice:?}"), format!("{:?}", Credentials::from(&alice.token))] {
        assert!(!shown.contains(&alice.token), "{shown}");
    }
    // Two connections with the same credentials: a ticket works once, so each buys its own.
    let first = Connection::open(&over_wt, by_ticket.clone(), "ticket-1").await.unwrap();
    let second = Connection::open(&over_wt, by_ticket.clone(), "ticket-2").await.unwrap();
    assert_eq!((first.welcome().user.username.as_str(), second.welcome().user.username.as_str()), ("alice", "alice"));
    first.close().await;
    second.close().await;
    // The WebSocket upgrade takes the cookie alone (PROTOCOL.md § 1.2).
    match Connection::open(&alice.websocket().await.unwrap(), by_ticket.clone(), "ticket-ws").await {
        Err(ClientError::Http(e)) => assert!(e.contains("ticket"), "{e}"),
        other => panic!("expected a refusal before connecting, got {:?}", other.map(|_| ())),
    }
    // A ticket bought with a token that no longer holds is refused over HTTP.
    let stranger = Account::from_token(&base, "not.a.jwt", 0, "stranger");
    match Connection::open(&over_wt, Credentials::Ticket(stranger), "no-ticket").await {
        Err(ClientError::Http(e)) => assert!(e.contains("401"), "{e}"),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }

    let mut reader = Client::for_account(&alice, Transport::WebTransportTicket, "reader").await.unwrap();
    let mut writer = Client::connect(bob.websocket().await.unwrap(), &bob.token, "writer").await.unwrap();
    reader.join("general", None).await.unwrap();
    writer.join("general", None).await.unwrap();
    writer.send("general", "before", vec![]).await.unwrap();
    assert_eq!(within("before", reader.next_message()).await.unwrap().text, "before");

    // The node restarts with a new certificate (its hash is pinned) and without the tickets it
    // held: the reader asks where to connect again and buys a new ticket.
    running.shutdown().await;
    let running = start_wt(dir.path(), addr, Some(wt)).await;
    let again = alice.webtransport().await.unwrap().expect("still offered");
    assert_ne!(format!("{again:?}"), format!("{over_wt:?}"), "a new certificate hash");
    writer.send("general", "after", vec![]).await.unwrap();
    let got = within("after the restart", reader.next_message()).await.unwrap();
    assert_eq!((got.seq, got.text.as_str()), (2, "after"));
    assert!(reader.reconnects() >= 1, "the reader connected again");
    reader.close().await;
    writer.close().await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_room_reset_on_the_server_is_followed_from_its_new_head() {
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start_on = |dir: std::path::PathBuf, listen: SocketAddr| async move {
        let mut config = Config::embedded(listen, dir);
        config.auth_burst = 1000;
        config.wt_listen = MaybeAddr(None);
        // The same secret on both databases: the tokens stay valid across the reset.
        config.jwt_secret = Some("a-secret-that-is-long-enough-for-hs256-tokens".into());
        server::start(config).await.expect("server starts")
    };
    let running = start_on(old.path().to_path_buf(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = running.local_addr();
    let base = format!("http://{addr}");
    let alice = account(&base, "alice").await;
    let bob = account(&base, "bob").await;
    let endpoint = alice.websocket().await.unwrap();
    let mut reader = Client::connect(endpoint.clone(), &bob.token, "reader").await.unwrap();
    let mut writer = Client::connect(endpoint, &alice.token, "writer").await.unwrap();
    reader.join("design", None).await.unwrap();
    writer.join("design", None).await.unwrap();
    for n in 1..=5 {
        writer.send("design", &format!("old {n}"), vec![]).await.unwrap();
    }
    for _ in 1..=5 {
        within("the old history", reader.next_message()).await.unwrap();
    }
    assert_eq!(reader.last_seq("design"), Some(5));

    // The node comes back on an empty database (the same users registered again, in order).
    running.shutdown().await;
    let running = start_on(new.path().to_path_buf(), addr).await;
    account(&base, "alice").await;
    account(&base, "bob").await;
    // The reader reconnects and joins again: the room's presence comes after its Joined (a
    // frame of the old connection not yet taken may come first: it is not the one).
    within("the reader back in the room", async {
        loop {
            let event = reader.next_event().await.unwrap();
            if reader.resets() > 0 && matches!(event, ServerFrame::RoomPresence(p) if p.room == "design") {
                break;
            }
        }
    })
    .await;
    assert_eq!((reader.resets(), reader.last_seq("design")), (1, Some(0)), "followed from the new head");
    writer.send("design", "new 1", vec![]).await.unwrap();
    let got = within("the first message of the new history", reader.next_message()).await.unwrap();
    assert_eq!((got.seq, got.text.as_str()), (1, "new 1"));
    reader.close().await;
    writer.close().await;
    running.shutdown().await;
}

#[tokio::test]
async fn after_a_flood_close_the_client_waits_ten_seconds_before_it_connects_again() {
    let (_dir, running, base) = fresh(false).await;
    let alice = account(&base, "alice").await;
    let mut client = Client::connect(alice.websocket().await.unwrap(), &alice.token, "flooder").await.unwrap();
    client.join("general", None).await.unwrap();
    // Read marks beyond their rate: 10 pass, and the server closes with 4004 (Flood) after
    // 200 refusals. All of them are written before the server reads the first.
    for _ in 0..215 {
        client.mark_read("general", 1).await.unwrap();
    }
    let start = std::time::Instant::now();
    // The next events: the refusals, then (after the close) the room's presence on the new
    // connection, which joined the room again.
    within("back in the room", async {
        loop {
            if let ServerFrame::RoomPresence(_) = client.next_event().await.unwrap()
                && client.reconnects() == 1
            {
                return;
            }
        }
    })
    .await;
    let waited = start.elapsed();
    assert!(waited >= socketchat_client::client::FLOOD_WAIT, "connected again after {waited:?}");
    client.close().await;
    running.shutdown().await;
}

fn send(room: &str, id: u8, text: &str) -> socketchat::wire::ClientFrame {
    socketchat::wire::ClientFrame::Send(socketchat::wire::Send {
        room: room.into(),
        client_msg_id: [id; 16],
        text: text.into(),
        attachments: Vec::new(),
    })
}

#[tokio::test]
async fn a_waiting_connection_sends_heartbeat_pings_and_takes_their_pongs_over_both_transports() {
    let (_dir, running, base) = fresh(true).await;
    let alice = account(&base, "alice").await;
    let bob = account(&base, "bob").await;
    let ws = alice.websocket().await.unwrap();
    let wt = alice.webtransport().await.unwrap().expect("the server offers WebTransport");
    let mut talker = Connection::open(&ws, &bob.token, "talker").await.unwrap();
    talker.join("general", None).await.unwrap();
    let listeners = [
        Connection::open(&ws, &alice.token, "listener").await.unwrap(),
        Connection::open(&wt, Credentials::Ticket(alice.clone()), "listener").await.unwrap(),
    ];
    for (n, mut conn) in listeners.into_iter().enumerate() {
        assert_eq!(conn.welcome().heartbeat_ms, 25_000, "the server's interval, the default");
        conn.join("general", None).await.unwrap();
        conn.set_heartbeat(Duration::from_millis(50));
        // Waiting for events: the Pings go out and their Pongs are taken, not passed on.
        within("three heartbeats answered", async {
            while conn.heartbeats_answered() < 3 {
                if let Ok(frame) = tokio::time::timeout(Duration::from_millis(20), conn.next_event()).await {
                    // Presence may come; a Pong or a lost connection may not.
                    assert!(matches!(frame, Ok(ServerFrame::RoomPresence(_))), "{frame:?}");
                }
            }
        })
        .await;
        // A caller's own Ping is answered to the caller.
        let nonce = 7 + n as u64;
        conn.send_frame(&socketchat::wire::ClientFrame::Ping(socketchat::wire::Ping { nonce })).await.unwrap();
        let pong = within("own pong", conn.next_where(|f| matches!(f, ServerFrame::Pong(_)))).await.unwrap();
        assert!(matches!(&pong, ServerFrame::Pong(p) if p.nonce == nonce), "{pong:?}");
        // A message that arrives while heartbeats go out is whole.
        let text = format!("while pinging {n}");
        talker.store(send("general", 40 + n as u8, &text)).await.unwrap();
        let got = within("the message", conn.next_where(|f| matches!(f, ServerFrame::Message(_)))).await.unwrap();
        assert!(matches!(&got, ServerFrame::Message(m) if m.text == text), "{got:?}");
        conn.close().await;
    }
    talker.close().await;
    running.shutdown().await;
}
