//! End-to-end over real WebSockets against a real server on the embedded default.

mod support;

use socketchat::wire::{self, ClientFrame, CloseCode, ErrorCode, ServerFrame};
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn upgrade_is_refused_without_a_valid_token_or_from_a_foreign_origin() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    assert_eq!(Client::connect(server.addr, None, None).await.err(), Some(401), "no cookie");
    assert_eq!(Client::connect(server.addr, Some("not.a.jwt"), None).await.err(), Some(401), "garbage token");
    let mut forged: Vec<&str> = token.split('.').collect();
    let other_sig = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    forged[2] = other_sig;
    assert_eq!(Client::connect(server.addr, Some(&forged.join(".")), None).await.err(), Some(401), "bad signature");
    assert_eq!(
        Client::connect(server.addr, Some(&token), Some("http://evil.example")).await.err(),
        Some(403),
        "cross-site WebSocket hijacking"
    );
    let own = format!("http://{}", server.addr);
    assert!(Client::connect(server.addr, Some(&token), Some(&own)).await.is_ok(), "own origin");
    let tls_proxied = format!("https://{}", server.addr);
    assert!(Client::connect(server.addr, Some(&token), Some(&tls_proxied)).await.is_ok(), "own host over https");
    let not_an_origin = format!("http://{}/", server.addr);
    assert_eq!(
        Client::connect(server.addr, Some(&token), Some(&not_an_origin)).await.err(),
        Some(403),
        "a trailing slash"
    );
    assert!(Client::connect(server.addr, Some(&token), None).await.is_ok(), "native client without Origin");
}

#[tokio::test]
async fn logout_revokes_the_token_for_upgrades_the_api_and_open_connections() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    // A second login of the same user: another token, which logout must not touch.
    let other = server
        .http
        .post(server.url("/api/auth/login"))
        .json(&serde_json::json!({"email": "alice@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    let other = token_from(&other).unwrap();
    let (mut live, _) = server.connect_hello_raw(&token).await;
    let (mut kept, _) = server.connect_hello(&other).await;
    assert_eq!(server.get("/api/auth/me", &token).await.status(), 200);
    let out = server
        .http
        .post(server.url("/api/auth/logout"))
        .header("cookie", format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(live.expect_close().await, (Some(CloseCode::Unauthorized.code()), Some(CloseCode::Unauthorized.code())));
    assert_eq!(server.get("/api/auth/me", &token).await.status(), 401);
    assert_eq!(Client::connect(server.addr, Some(&token), None).await.err(), Some(401));
    kept.send(&ClientFrame::Ping(wire::Ping { nonce: 3 })).await;
    kept.recv_until(|f| matches!(f, ServerFrame::Pong(_)).then_some(())).await;
}

#[tokio::test]
async fn two_users_see_each_others_messages_in_the_same_order() {
    let server = TestServer::start().await;
    let (mut a, mut b) = alice_and_bob_in(&server, "general").await;
    let mut seen: [Vec<(u64, String, String)>; 2] = [Vec::new(), Vec::new()];
    for i in 0..10u8 {
        let who = usize::from(i % 2);
        let name = ["alice", "bob"][who];
        let client = if who == 0 { &mut a } else { &mut b };
        client.send(&send("general", i, &format!("{name} says {i}"))).await;
        // Wait for the ack, keeping the messages that arrive meanwhile.
        let acked = loop {
            match client.recv().await {
                ServerFrame::Ack(ack) => break ack,
                ServerFrame::Message(m) => seen[who].push((m.seq, m.sender.username, m.text)),
                _ => {}
            }
        };
        assert_eq!(acked.seq, u64::from(i) + 1);
    }
    for (who, client) in [&mut a, &mut b].into_iter().enumerate() {
        while seen[who].len() < 10 {
            let m = message(client).await;
            seen[who].push((m.seq, m.sender.username, m.text));
        }
    }
    let want: Vec<_> = (0..10u64)
        .map(|i| {
            let name = if i % 2 == 0 { "alice" } else { "bob" };
            (i + 1, name.to_owned(), format!("{name} says {i}"))
        })
        .collect();
    assert_eq!(seen[0], want);
    assert_eq!(seen[1], want);
}

#[tokio::test]
async fn frames_sent_right_after_the_upgrade_are_all_handled_in_order() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let mut client = server.connect(&token).await;
    // No waiting for Welcome: Hello, Join and 20 sends leave in one burst.
    client.hello().await;
    client.send(&join("general", None)).await;
    for i in 0..20u8 {
        client.send(&send("general", i, &format!("burst {i}"))).await;
    }
    let mut acks = Vec::new();
    while acks.len() < 20 {
        match client.recv().await {
            ServerFrame::Ack(a) => acks.push((a.client_msg_id[0], a.seq)),
            ServerFrame::Error(e) => panic!("unexpected error {e:?}"),
            _ => {}
        }
    }
    assert_eq!(acks, (0..20u8).map(|i| (i, u64::from(i) + 1)).collect::<Vec<_>>());
    let page: serde_json::Value =
        server.get("/api/channels/general/messages?limit=100", &token).await.json().await.unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn a_retried_send_gets_the_identical_ack_and_is_stored_once_also_after_reconnect() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let (mut client, _) = server.connect_hello(&token).await;
    join_and_replay(&mut client, "general", None).await;
    client.send(&send("general", 42, "only once")).await;
    let first = ack(&mut client).await;
    client.send(&send("general", 42, "only once")).await;
    assert_eq!(ack(&mut client).await, first, "retry on the same connection");
    drop(client);

    let (mut again, _) = server.connect_hello(&token).await;
    join_and_replay(&mut again, "general", Some(first.seq)).await;
    again.send(&send("general", 42, "only once")).await;
    assert_eq!(ack(&mut again).await, first, "retry after reconnect");
    again.send(&send("general", 43, "next")).await;
    assert_eq!(ack(&mut again).await.seq, first.seq + 1, "a duplicate consumes no seq");

    let page: serde_json::Value = server.get("/api/channels/general/messages", &token).await.json().await.unwrap();
    let texts: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["only once", "next"]);
}

#[tokio::test]
async fn resume_after_reconnect_delivers_exactly_the_missed_messages() {
    let server = TestServer::start().await;
    let (ta, tb) = (server.register("alice").await, server.register("bob").await);
    let (mut a, _) = server.connect_hello(&ta).await;
    join_and_replay(&mut a, "general", None).await;
    let (mut b, _) = server.connect_hello(&tb).await;
    join_and_replay(&mut b, "general", None).await;
    for i in 1..=3u8 {
        a.send(&send("general", i, &format!("seen {i}"))).await;
        ack(&mut a).await;
    }
    let mut last_seen = 0;
    for _ in 0..3 {
        last_seen = message(&mut b).await.seq;
    }
    assert_eq!(last_seen, 3);
    drop(b);
    for i in 4..=8u8 {
        a.send(&send("general", i, &format!("missed {i}"))).await;
        ack(&mut a).await;
    }
    let (mut b, _) = server.connect_hello(&tb).await;
    let (joined, replay) = join_and_replay(&mut b, "general", Some(last_seen)).await;
    assert_eq!((joined.head_seq, joined.replay_from), (8, 4));
    assert_eq!(replay.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
    assert_eq!(replay[0].text, "missed 4");
    a.send(&send("general", 9, "live again")).await;
    ack(&mut a).await;
    let live = message(&mut b).await;
    assert_eq!((live.seq, live.text.as_str()), (9, "live again"), "nothing twice, nothing skipped");
}

/// `GET /api/presence/users?ids=…` as `(online, last_seen_ms)` per id.
async fn status(server: &TestServer, token: &str, ids: &[u64]) -> Vec<(bool, Option<u64>)> {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    let body: serde_json::Value =
        server.get(&format!("/api/presence/users?ids={}", ids.join(",")), token).await.json().await.unwrap();
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["online"].as_bool().unwrap(), u["last_seen_ms"].as_u64()))
        .collect()
}

#[tokio::test]
async fn room_presence_counts_tabs_until_the_last_one_leaves_and_keeps_last_seen() {
    let server = TestServer::start().await;
    let (ta, tb) = (server.register("alice").await, server.register("bob").await);
    let (mut watcher, _) = server.connect_hello(&tb).await;
    join_and_replay(&mut watcher, "general", None).await;
    assert_eq!(room_presence(&mut watcher, "general").await, (1, vec!["bob".to_owned()]), "after the replay");

    // Connected but in no room: online, yet nothing in the room changes.
    let (mut tab1, w1) = server.connect_hello(&ta).await;
    let alice = w1.user.id;
    assert_eq!(status(&server, &tb, &[alice]).await, [(true, None)]);
    join_and_replay(&mut tab1, "general", None).await;
    assert_eq!(room_presence(&mut tab1, "general").await, (2, vec!["alice".to_owned(), "bob".to_owned()]));
    // (The watcher may first get a refresh that shows what its own join already showed.)
    let both = (2, vec!["alice".to_owned(), "bob".to_owned()]);
    while room_presence(&mut watcher, "general").await != both {}

    // A second tab in the same room changes nothing: no frame before the Pong.
    let (mut tab2, _) = server.connect_hello(&ta).await;
    join_and_replay(&mut tab2, "general", None).await;
    tab1.close().await;
    watcher.send(&ClientFrame::Ping(wire::Ping { nonce: 2 })).await;
    let next = watcher
        .recv_until(|f| match f {
            ServerFrame::RoomPresence(p) => Some(Some(p.online)),
            ServerFrame::Pong(_) => Some(None),
            _ => None,
        })
        .await;
    assert_eq!(next, None, "no change while a tab is in the room");

    // Leaving the room (the tab stays connected) takes alice out of the room only.
    tab2.send(&ClientFrame::Leave(wire::Leave { room: "general".into() })).await;
    assert_eq!(room_presence(&mut watcher, "general").await, (1, vec!["bob".to_owned()]));
    assert_eq!(status(&server, &tb, &[alice]).await, [(true, None)], "still online");
    let before = unix_ms();
    tab2.close().await;
    let [(online, Some(seen))] = status(&server, &tb, &[alice]).await[..] else { panic!("alice has a last-seen time") };
    assert!(!online);
    assert!(seen >= before && seen <= unix_ms(), "last seen when the last tab closed: {seen} vs {before}");
    let online: serde_json::Value = server.get("/api/presence/online", &tb).await.json().await.unwrap();
    assert_eq!(online["online"], 1);
    assert_eq!(online["users"][0]["username"], "bob");
}

#[tokio::test]
async fn last_seen_survives_a_restart_of_the_embedded_server() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let (client, welcome) = server.connect_hello(&token).await;
    client.close().await;
    let [(false, Some(seen))] = status(&server, &token, &[welcome.user.id]).await[..] else { panic!("last seen") };
    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    assert_eq!(status(&server, &token, &[welcome.user.id, 999_999]).await, [(false, Some(seen)), (false, None)]);
}

#[tokio::test]
async fn a_room_presence_frame_stays_bounded_however_many_are_online_and_the_rest_is_paged() {
    let server = TestServer::start().await;
    let watcher_token = server.register("watcher").await;
    let (mut watcher, _) = server.connect_hello(&watcher_token).await;
    join_and_replay(&mut watcher, "general", None).await;
    room_presence(&mut watcher, "general").await;
    let mut users = Vec::new();
    for i in 0..60 {
        let token = server.register(&format!("user{i:02}")).await;
        let (mut client, _) = server.connect_hello(&token).await;
        join_and_replay(&mut client, "general", None).await;
        users.push(client);
    }
    loop {
        let frame = watcher.recv_until(pick::room_presence).await;
        let bytes = wire::encode(&ServerFrame::RoomPresence(frame.clone())).len();
        assert!(bytes <= wire::MAX_ROOM_PRESENCE_FRAME, "{bytes} bytes");
        assert!(frame.users.len() <= wire::ROOM_PRESENCE_PAGE);
        let names: Vec<&str> = frame.users.iter().map(|u| u.username.as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "ordered by username: {names:?}");
        if frame.online == 61 {
            assert_eq!(names.len(), 50);
            assert_eq!((names[0], names[49]), ("user00", "user49"), "the first page by username");
            break;
        }
    }
    // The rest over HTTP, a page at a time with the cursor.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => "/api/presence/rooms/general?limit=25".to_owned(),
            Some(name) => format!("/api/presence/rooms/general?limit=25&after={name}"),
        };
        let page: serde_json::Value = server.get(&path, &watcher_token).await.json().await.unwrap();
        assert_eq!(page["online"], 61);
        seen.extend(page["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_owned()));
        match page["next_after"].as_str() {
            Some(name) => after = Some(name.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..60).map(|i| format!("user{i:02}")).collect();
    expected.push("watcher".into());
    assert_eq!(seen, expected);
    for (path, status) in [
        ("/api/presence/rooms/general?limit=0", 400),
        ("/api/presence/rooms/general?limit=101", 400),
        ("/api/presence/rooms/nowhere", 404),
        ("/api/presence/users?ids=", 400),
        ("/api/presence/users?ids=1,x", 400),
        (&format!("/api/presence/users?ids={}", vec!["1"; 101].join(",")), 400),
        ("/api/presence/online?limit=abc", 400),
        ("/api/presence/online?limit=-1", 400),
        (&format!("/api/presence/online?after={}", "z".repeat(4000)), 200),
        ("/api/presence/rooms/general?after=%00%01", 200),
    ] {
        assert_eq!(server.get(path, &watcher_token).await.status(), status, "{path}");
    }
    for path in ["/api/presence/users?ids=1", "/api/presence/online", "/api/presence/rooms/general"] {
        assert_eq!(server.http.get(server.url(path)).send().await.unwrap().status(), 401, "{path}");
    }
    let forged = format!("{}x", watcher_token);
    assert_eq!(server.get("/api/presence/online", &forged).await.status(), 401, "a bad signature");
}

#[tokio::test]
async fn a_version_2_client_is_told_which_version_to_speak() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let mut old = server.connect(&token).await;
    old.send(&ClientFrame::Hello(wire::Hello { version: 2, client: "web/0.9".into() })).await;
    use futures_util::StreamExt;
    let mut goaway = None;
    let close = loop {
        match old.ws.next().await {
            Some(Ok(Message::Binary(bytes))) => goaway = Some(wire::decode::<ServerFrame>(&bytes, usize::MAX).unwrap()),
            Some(Ok(Message::Close(frame))) => break frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let reason = "protocol version 2 is not supported; this server speaks 3".to_owned();
    assert_eq!(goaway, Some(ServerFrame::GoAway(wire::GoAway { code: 4502, reason: reason.clone() })));
    assert_eq!(close, Some((4502, reason)));
}

#[tokio::test]
async fn only_members_may_send_or_type_and_typing_reaches_other_members() {
    let server = TestServer::start().await;
    let (ta, tb, tc) = (server.register("alice").await, server.register("bob").await, server.register("carol").await);
    let (mut a, _) = server.connect_hello(&ta).await;
    let (mut b, _) = server.connect_hello(&tb).await;
    let (mut c, _) = server.connect_hello(&tc).await;
    a.send(&send("general", 1, "not joined")).await;
    let err = a.recv_until(pick::error).await;
    assert_eq!((err.code, err.client_msg_id), (ErrorCode::NotMember.code(), Some([1; 16])));
    // A room that does not exist gets the same answer as one not joined (a private room's
    // existence is not told to non-members).
    a.send(&send("nowhere", 2, "x")).await;
    let err = a.recv_until(pick::error).await;
    assert_eq!(err.code, ErrorCode::NotMember.code());

    join_and_replay(&mut a, "general", None).await;
    join_and_replay(&mut b, "general", None).await;
    join_and_replay(&mut c, "design", None).await;
    a.send(&ClientFrame::Typing(wire::TypingUpdate { room: "general".into(), active: true })).await;
    let typing = b.recv_until(pick::typing).await;
    assert_eq!((typing.user.username.as_str(), typing.active), ("alice", true));
    // carol (another room) gets neither the typing nor the message; a ping proves the order.
    a.send(&send("general", 3, "for general only")).await;
    ack(&mut a).await;
    assert_eq!(message(&mut b).await.text, "for general only");
    c.send(&ClientFrame::Ping(wire::Ping { nonce: 9 })).await;
    let first = c
        .recv_until(|f| match f {
            ServerFrame::RoomPresence(p) if p.room == "design" => None,
            other => Some(other),
        })
        .await;
    assert!(matches!(first, ServerFrame::Pong(_)), "carol got {first:?}");
}

#[tokio::test]
async fn bad_frames_close_only_the_offender() {
    let server = TestServer::start().await;
    let (ta, tb) = (server.register("alice").await, server.register("bob").await);
    let (mut good, _) = server.connect_hello(&tb).await;
    join_and_replay(&mut good, "general", None).await;

    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let mut trailing = wire::encode(&ClientFrame::Ping(wire::Ping { nonce: 1 }));
    trailing.push(0);
    let oversized = wire::encode(&send("general", 1, &"x".repeat(20_000)));
    let cases = [
        ("garbage", Message::Binary(vec![0xff, 0x00, 0x13].into()), CloseCode::BadFrame),
        ("trailing", Message::Binary(trailing.into()), CloseCode::BadFrame),
        ("oversized", Message::Binary(oversized.into()), CloseCode::FrameTooLarge),
        ("huge", Message::Binary(vec![4u8; 200_000].into()), CloseCode::FrameTooLarge),
        ("text", Message::Text("hello".into()), CloseCode::TextNotSupported),
        (
            "text, not even UTF-8",
            Message::Frame(Frame::message(vec![0xff, 0xfe], OpCode::Data(Data::Text), true)),
            CloseCode::TextNotSupported,
        ),
    ];
    for (name, message, code) in cases {
        let (mut bad, _) = server.connect_hello_raw(&ta).await;
        use futures_util::SinkExt;
        bad.ws.send(message).await.unwrap();
        let (goaway, close) = bad.expect_close().await;
        assert_eq!(close, Some(code.code()), "{name}: close code");
        assert_eq!(goaway, Some(code.code()), "{name}: GoAway before the close");
    }
    let mut first = server.connect(&ta).await;
    first.send(&join("general", None)).await;
    assert_eq!(first.expect_close().await.1, Some(CloseCode::HelloRequired.code()));
    let mut future = server.connect(&ta).await;
    future.send(&ClientFrame::Hello(wire::Hello { version: 4, client: "future".into() })).await;
    assert_eq!(future.expect_close().await.1, Some(CloseCode::UnsupportedVersion.code()));

    // The well-behaved client never noticed.
    good.send(&send("general", 7, "still here")).await;
    assert_eq!(ack(&mut good).await.seq, 1);
    assert_eq!(message(&mut good).await.text, "still here");
}

#[tokio::test]
async fn a_message_far_over_the_limit_still_being_sent_gets_its_close_frame_not_a_reset() {
    // 12 MiB: more than the two sockets' buffers hold, so the client is still writing it when
    // the server, having read its header, refuses it. Closing a socket with unread input makes
    // the kernel answer with a reset: the client's write fails, and the reason with it.
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let (mut bad, _) = server.connect_hello_raw(&token).await;
    use futures_util::SinkExt;
    let sent = bad.ws.send(Message::Binary(vec![4u8; 12 << 20].into())).await;
    assert!(sent.is_ok(), "the whole message is taken, not reset: {sent:?}");
    let (goaway, close) = bad.expect_close().await;
    assert_eq!((goaway, close), (Some(CloseCode::FrameTooLarge.code()), Some(CloseCode::FrameTooLarge.code())));
}

#[tokio::test]
async fn history_pages_newest_first_over_rest_and_protocol() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let (mut client, _) = server.connect_hello(&token).await;
    join_and_replay(&mut client, "support", None).await;
    for i in 1..=45u8 {
        client.send(&send("support", i, &format!("m{i}"))).await;
        ack(&mut client).await;
    }
    let seqs = |page: &serde_json::Value| -> Vec<u64> {
        page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
    };
    let newest: serde_json::Value =
        server.get("/api/channels/support/messages?limit=20", &token).await.json().await.unwrap();
    assert_eq!(seqs(&newest), (26..=45).collect::<Vec<_>>());
    assert_eq!(newest["next_before"], 26);
    let older: serde_json::Value =
        server.get("/api/channels/support/messages?limit=20&before=26", &token).await.json().await.unwrap();
    assert_eq!(seqs(&older), (6..=25).collect::<Vec<_>>());
    let oldest: serde_json::Value =
        server.get("/api/channels/support/messages?limit=20&before=6", &token).await.json().await.unwrap();
    assert_eq!(seqs(&oldest), (1..=5).collect::<Vec<_>>());
    assert!(oldest["next_before"].is_null());
    assert_eq!(server.get("/api/channels/support/messages?limit=101", &token).await.status(), 400);
    assert_eq!(server.get("/api/channels/nope/messages", &token).await.status(), 404);
    assert_eq!(server.get("/api/channels/support/messages", "bad").await.status(), 401);

    client
        .send(&ClientFrame::History(wire::HistoryRequest {
            request_id: 5,
            room: "support".into(),
            before_seq: None,
            limit: 10,
        }))
        .await;
    let page = client.recv_until(pick::history).await;
    assert_eq!(page.request_id, 5);
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), (36..=45).collect::<Vec<_>>());
    assert_eq!(page.next_before, Some(36));
}

#[tokio::test]
async fn shutdown_tells_connections_to_reconnect_elsewhere() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let (mut client, _) = server.connect_hello_raw(&token).await;
    let stopping = tokio::spawn(server.stop());
    let (goaway, close) = client.expect_close().await;
    assert_eq!((goaway, close), (Some(CloseCode::ServerShutdown.code()), Some(CloseCode::ServerShutdown.code())));
    stopping.await.unwrap();
}

#[tokio::test]
async fn messages_survive_a_restart_on_the_same_data_dir() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let (mut client, _) = server.connect_hello(&token).await;
    join_and_replay(&mut client, "general", None).await;
    client.send(&send("general", 1, "durable")).await;
    let acked = ack(&mut client).await;
    drop(client);
    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    // Same secret on disk: the old token still works after the restart.
    let (mut client, _) = server.connect_hello(&token).await;
    let (_, replay) = join_and_replay(&mut client, "general", Some(0)).await;
    assert_eq!(replay.len(), 1);
    assert_eq!(
        (replay[0].seq, replay[0].message_id, replay[0].text.as_str()),
        (acked.seq, acked.message_id, "durable")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_and_everyone_else_gets_everything() {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 750;
    const TOTAL: usize = WRITERS * PER_WRITER;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |c| c.send_burst = 10_000).await;
    let (ts, tw, tg) = (server.register("slow").await, server.register("writer").await, server.register("good").await);

    let mut slow = Client::connect_small_buffer(server.addr, &ts).await;
    slow.hello().await;
    join_and_replay(&mut slow, "general", None).await;
    // From here on `slow` reads nothing until the writers are done.

    let (mut good, _) = server.connect_hello(&tg).await;
    join_and_replay(&mut good, "general", None).await;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(TOTAL);
        while seqs.len() < TOTAL {
            seqs.push(message(&mut good).await.seq);
        }
        seqs
    });
    let text = "y".repeat(3900);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (mut client, _) = server.connect_hello(&tw).await;
        let text = text.clone();
        writers.push(tokio::spawn(async move {
            join_and_replay(&mut client, "general", None).await;
            let mut acked = 0;
            let mut sent = 0;
            // Keep a window of sends in flight; the writer reads its acks (and the room's
            // messages, which it receives as a member) as it goes.
            while acked < PER_WRITER {
                while sent < PER_WRITER && sent - acked < 32 {
                    client.send(&send_numbered("general", (w * PER_WRITER + sent) as u64, &text)).await;
                    sent += 1;
                }
                match client.recv().await {
                    ServerFrame::Ack(_) => acked += 1,
                    ServerFrame::Error(e) => panic!("writer got {e:?}"),
                    _ => {}
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let seqs = reader.await.unwrap();
    assert_eq!(seqs, (1..=TOTAL as u64).collect::<Vec<_>>(), "the good member got every message once, in order");

    // The slow member was cut off: its stream ends before all messages arrived.
    let mut received = 0;
    let mut goaway = None;
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(WAIT, slow.ws.next()).await.expect("the slow stream ends") {
            Some(Ok(Message::Binary(bytes))) => match wire::decode::<ServerFrame>(&bytes, usize::MAX).unwrap() {
                ServerFrame::Message(_) => received += 1,
                ServerFrame::GoAway(g) => goaway = Some(g.code),
                _ => {}
            },
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break,
        }
    }
    assert!(received < TOTAL, "slow consumer was disconnected (received {received} of {TOTAL})");
    if let Some(code) = goaway {
        assert_eq!(code, CloseCode::Slow.code());
    }
    assert_eq!(server.metric("slow_disconnects_total").await, 1);
}

#[tokio::test]
async fn a_connection_is_closed_when_its_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |c| c.token_ttl_secs = 1).await;
    let token = server.register("alice").await;
    let (mut client, _) = server.connect_hello_raw(&token).await;
    let (goaway, close) = client.expect_close().await;
    assert_eq!((goaway, close), (Some(CloseCode::Unauthorized.code()), Some(CloseCode::Unauthorized.code())));
    assert_eq!(Client::connect(server.addr, Some(&token), None).await.err(), Some(401), "expired token refused");
}

#[tokio::test]
async fn joining_a_joined_room_again_sends_nothing_twice() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let (mut a, _) = server.connect_hello(&token).await;
    join_and_replay(&mut a, "general", None).await;
    for i in 1..=5 {
        a.send(&send("general", i, "once")).await;
        ack(&mut a).await;
        message(&mut a).await;
    }
    for after in [Some(0), None, Some(3)] {
        a.send(&join("general", after)).await;
        let joined = a.recv_until(pick::joined).await;
        assert_eq!((joined.head_seq, joined.replay_from), (5, 6), "{after:?}: nothing to replay");
        a.send(&ClientFrame::Ping(wire::Ping { nonce: 1 })).await;
        let next = a
            .recv_until(|f| match f {
                ServerFrame::Message(m) => Some(Some(m.seq)),
                ServerFrame::Pong(_) => Some(None),
                _ => None,
            })
            .await;
        assert_eq!(next, None, "{after:?}: no message sent again");
    }
    // And live messages keep coming once.
    a.send(&send("general", 6, "after")).await;
    ack(&mut a).await;
    assert_eq!(message(&mut a).await.seq, 6);
}

#[tokio::test]
async fn a_client_with_unread_input_gets_the_goaway_the_close_code_and_a_clean_close_not_a_reset() {
    use futures_util::SinkExt;
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    for round in 0..5 {
        let (mut bad, _) = server.connect_hello_raw(&token).await;
        // A bad frame, and right behind it more input the server will never read as frames.
        bad.ws.feed(Message::Binary(vec![0xff, 0x00, 0x13].into())).await.unwrap();
        for n in 0..5000u64 {
            bad.ws
                .feed(Message::Binary(wire::encode(&ClientFrame::Ping(wire::Ping { nonce: n })).into()))
                .await
                .unwrap();
        }
        let _ = bad.ws.flush().await;
        let (goaway, close) = bad.expect_close().await;
        assert_eq!(
            (goaway, close),
            (Some(CloseCode::BadFrame.code()), Some(CloseCode::BadFrame.code())),
            "round {round}"
        );
        // The client answers the close; the server reads on until then, so the connection ends
        // with a clean close, not a reset (which can cost a client the frames above).
        use futures_util::StreamExt;
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), bad.ws.next()).await.expect("ends");
        assert!(
            !matches!(&end, Some(Err(e)) if e.to_string().to_lowercase().contains("reset")),
            "round {round}: the connection was reset: {end:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_websocket_frame_gets_close_1002() {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let (mut bad, _) = server.connect_hello_raw(&token).await;
    // An unmasked frame from a client is a protocol error (RFC 6455 § 5.1); written raw.
    bad.ws.get_mut().write_all(&[0x82, 0x02, 0x07, 0x01]).await.unwrap();
    let close = loop {
        match tokio::time::timeout(WAIT, bad.ws.next()).await.expect("an answer") {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close, Some(1002));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_client_at_shutdown_gets_goaway_4000_and_the_close_code() {
    use futures_util::{SinkExt, StreamExt};
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let (client, _) = server.connect_hello_raw(&token).await;
    let (mut sink, mut stream) = client.ws.split();
    // The client never stops sending while the server shuts down.
    let writer = tokio::spawn(async move {
        for n in 0u64.. {
            let ping = wire::encode(&ClientFrame::Ping(wire::Ping { nonce: n }));
            if sink.send(Message::Binary(ping.into())).await.is_err() {
                break;
            }
        }
    });
    let stopping = tokio::spawn(server.stop());
    let mut goaway = None;
    let close = loop {
        match tokio::time::timeout(WAIT, stream.next()).await.expect("an answer") {
            Some(Ok(Message::Binary(bytes))) => {
                if let Ok(ServerFrame::GoAway(g)) = wire::decode::<ServerFrame>(&bytes, usize::MAX) {
                    goaway = Some(g.code);
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("no close frame (GoAway {goaway:?}): {other:?}"),
        }
    };
    assert_eq!((goaway, close), (Some(4000), Some(4000)));
    writer.abort();
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_that_reads_again_learns_why_it_was_cut() {
    use futures_util::StreamExt;
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| c.send_burst = 100_000).await;
    let (ts, tw) = (server.register("slow").await, server.register("writer").await);
    let mut slow = Client::connect_small_buffer(server.addr, &ts).await;
    slow.hello().await;
    join_and_replay(&mut slow, "general", None).await;
    let (mut writer, _) = server.connect_hello(&tw).await;
    join_and_replay(&mut writer, "general", None).await;
    let text = "z".repeat(3900);
    let slow_count = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("socketchat_slow_disconnects_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Send until the server gives up on `slow` (which reads nothing meanwhile).
    let mut n = 0u64;
    loop {
        for _ in 0..50 {
            writer.send(&send_numbered("general", n, &text)).await;
            n += 1;
        }
        for _ in 0..50 {
            writer.recv_until(pick::ack).await;
        }
        let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if slow_count(&metrics) == 1 {
            break;
        }
        assert!(n < 20_000, "never cut");
    }
    // It reads again at once: behind what was queued for it come GoAway 4001 and the close.
    let mut goaway = None;
    let close = loop {
        match tokio::time::timeout(WAIT, slow.ws.next()).await.expect("the stream goes on") {
            Some(Ok(Message::Binary(bytes))) => {
                if let Ok(ServerFrame::GoAway(g)) = wire::decode::<ServerFrame>(&bytes, usize::MAX) {
                    goaway = Some(g.code);
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("ended without a close frame (GoAway {goaway:?}): {other:?}"),
        }
    };
    assert_eq!((goaway, close), (Some(CloseCode::Slow.code()), Some(CloseCode::Slow.code())));
}

/// A client that reads slowly hides its backlog in kernel buffers (megabytes) long before its
/// 1,024-event queue fills or a write blocks; the server's WebSocket Ping, answered only once
/// everything before it was read, tells how far behind it is.
#[tokio::test]
async fn a_client_that_falls_behind_reading_is_cut_once_a_ping_waits_past_the_lag_limit() {
    use futures_util::StreamExt;
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| {
        c.send_burst = 100_000;
        c.max_lag_ms = 300;
    })
    .await;
    let (tl, tw) = (server.register("lagging").await, server.register("writer").await);
    let mut lagging = server.connect(&tl).await;
    lagging.hello().await;
    join_and_replay(&mut lagging, "general", None).await;
    // From here on `lagging` reads nothing.
    let (mut writer, _) = server.connect_hello(&tw).await;
    join_and_replay(&mut writer, "general", None).await;
    // Small messages, each acked before the next, until the server cuts `lagging`: fewer than
    // its 1,024-event queue, and far less than the socket buffers hold, so only the unanswered
    // ping can be the reason. The writer reads as it goes and answers its pings.
    let mut sent = 0u64;
    while server.metric("slow_disconnects_total").await == 0 {
        assert!(sent < 900, "not cut after {sent} messages");
        for _ in 0..10 {
            writer.send(&send_numbered("general", sent, "tick")).await;
            sent += 1;
            writer.recv_until(pick::ack).await;
        }
    }
    // The reader is still served, and it was the only one cut.
    writer.send(&send("general", 200, "still here")).await;
    writer.recv_until(pick::ack).await;
    assert_eq!(server.metric("slow_disconnects_total").await, 1);
    // `lagging` reads again: what was sent to it before the cut, then why.
    let (mut messages, mut goaway) = (0u64, None);
    let close = loop {
        match tokio::time::timeout(WAIT, lagging.ws.next()).await.expect("the stream goes on") {
            Some(Ok(Message::Binary(bytes))) => match wire::decode::<ServerFrame>(&bytes, usize::MAX).unwrap() {
                ServerFrame::Message(_) => messages += 1,
                ServerFrame::GoAway(g) => goaway = Some((g.code, g.reason)),
                _ => {}
            },
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("ended without a close frame (GoAway {goaway:?}): {other:?}"),
        }
    };
    assert!(messages > 0 && messages <= sent, "{messages} of {sent}");
    let (code, reason) = goaway.expect("a GoAway before the close");
    assert_eq!((code, close), (CloseCode::Slow.code(), Some(CloseCode::Slow.code())));
    assert!(reason.contains("ping was not answered"), "{reason}");
}

#[tokio::test]
async fn a_client_that_goes_without_a_close_frame_is_a_closed_connection_not_a_bad_frame() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (mut a, _) = server.connect_hello(&alice).await;
    join_and_replay(&mut a, "general", None).await;
    server.metric_until("connections_open", |v| v == 1).await;
    // The TCP connection ends with no WebSocket close frame (a tab killed, a network gone).
    drop(a);
    server.metric_until("connections_open", |v| v == 0).await;
    assert_eq!(server.metric("bad_frames_total").await, 0, "a vanished peer sent no bad frame");
}
