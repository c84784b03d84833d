//! Protocol v3 end to end on the embedded server: edits and deletions as events of the seq
//! stream (live and on resume), files uploaded over HTTP and attached to messages, read marks
//! shared by a user's connections, and `RoomAdded` when someone is invited.

mod support;

use serde_json::{Value, json};
use socketchat::wire::{self, ClientFrame, ErrorCode, MessageKind, ServerFrame};
use support::*;

fn edit(room: &str, id: u8, target_seq: u64, text: &str) -> ClientFrame {
    ClientFrame::Edit(wire::Edit { room: room.into(), client_msg_id: [id; 16], target_seq, text: text.into() })
}

fn delete(room: &str, id: u8, target_seq: u64) -> ClientFrame {
    ClientFrame::Delete(wire::Delete { room: room.into(), client_msg_id: [id; 16], target_seq })
}

fn send_files(room: &str, id: u8, text: &str, attachments: Vec<u64>) -> ClientFrame {
    ClientFrame::Send(wire::Send { room: room.into(), client_msg_id: [id; 16], text: text.into(), attachments })
}

async fn upload(server: &TestServer, token: &str, name: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(&format!("/api/uploads?name={name}")))
        .header("cookie", format!("token={token}"))
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR not really an image";

#[tokio::test]
async fn edits_and_deletions_reach_members_live_and_on_resume_and_only_the_author_may_make_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (mut a, _) = server.connect_hello(&alice).await;
    let (mut b, _) = server.connect_hello(&bob).await;
    join_and_replay(&mut a, "general", None).await;
    join_and_replay(&mut b, "general", None).await;
    a.send(&send("general", 1, "helo")).await;
    let first = ack(&mut a).await.seq;
    assert_eq!(message(&mut b).await.text, "helo");
    let bob_last_seen = first;

    a.send(&edit("general", 2, first, "hello")).await;
    let edit_ack = ack(&mut a).await;
    assert_eq!(edit_ack.seq, first + 1, "an edit takes the next seq");
    let live = message(&mut b).await;
    assert_eq!((live.kind, live.target_seq, live.text.as_str()), (MessageKind::Edit, Some(first), "hello"));
    a.send(&edit("general", 2, first, "hello")).await;
    assert_eq!(ack(&mut a).await, edit_ack, "a retried edit gets the same ack");

    // Bob may not change alice's message; refusals say why and store nothing.
    b.send(&edit("general", 3, first, "bob was here")).await;
    let refused = b.recv_until(pick::error).await;
    assert_eq!((refused.code, refused.client_msg_id), (ErrorCode::BadRequest.code(), Some([3; 16])));
    assert!(refused.message.contains("your own"), "{}", refused.message);
    b.send(&delete("general", 4, first)).await;
    assert_eq!(b.recv_until(pick::error).await.code, ErrorCode::BadRequest.code());

    a.send(&delete("general", 5, first)).await;
    let delete_ack = ack(&mut a).await;
    let live = message(&mut b).await;
    assert_eq!((live.kind, live.target_seq, live.seq), (MessageKind::Delete, Some(first), delete_ack.seq));

    // A client that resumes from before the edit learns both changes in order, and the
    // message itself now reads deleted.
    b.close().await;
    let (mut b, _) = server.connect_hello(&bob).await;
    let (_, replay) = join_and_replay(&mut b, "general", Some(bob_last_seen - 1)).await;
    let kinds: Vec<(u64, MessageKind, Option<u64>)> = replay.iter().map(|m| (m.seq, m.kind, m.target_seq)).collect();
    assert_eq!(
        kinds,
        [
            (first, MessageKind::Post, None),
            (first + 1, MessageKind::Edit, Some(first)),
            (first + 2, MessageKind::Delete, Some(first)),
        ]
    );
    assert!(replay[0].deleted && replay[0].text.is_empty(), "{:?}", replay[0]);
    assert!(replay[0].edited_at_ms.is_some());
    let (status, page) = (
        server.get("/api/channels/general/messages", &bob).await.status(),
        server.get("/api/channels/general/messages", &bob).await.json::<Value>().await.unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(page["messages"][0]["deleted"], true);
    assert_eq!(page["messages"][1]["kind"], "edit");
    assert_eq!(page["messages"][1]["target_seq"], first);
}

#[tokio::test]
async fn files_are_stored_attached_and_served_only_to_who_may_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |c| c.max_upload_bytes = 64 * 1024).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;

    // Limits and names.
    let (status, _) = upload(&server, &alice, "big.bin", "application/octet-stream", &vec![7; 64 * 1024 + 1]).await;
    assert_eq!(status, 413, "over the configured limit");
    let (status, _) = upload(&server, &alice, "", "text/plain", b"x").await;
    assert_eq!(status, 400, "a name is needed");
    let (status, _) = upload(&server, &alice, "a%2Fb.txt", "text/plain", b"x").await;
    assert_eq!(status, 400, "no paths");
    let (status, _) = upload(&server, &alice, "empty.txt", "text/plain", b"").await;
    assert_eq!(status, 400);
    let (status, _) = upload(&server, "bogus", "x.txt", "text/plain", b"x").await;
    assert_eq!(status, 401);

    let (status, image) = upload(&server, &alice, "cat.png", "image/png", PNG).await;
    assert_eq!(status, 201, "{image}");
    let image_id = image["upload"]["id"].as_u64().unwrap();
    assert_eq!(image["upload"]["content_type"], "image/png");
    let (_, page) = upload(&server, &alice, "page.html", "text/html", b"<script>alert(1)</script>").await;
    let page_id = page["upload"]["id"].as_u64().unwrap();
    let (_, fake) = upload(&server, &alice, "fake.png", "image/png", b"<svg onload=alert(1)>").await;
    assert_eq!(fake["upload"]["content_type"], "application/octet-stream", "the bytes decide, not the claim");

    // Before it is shared, only its owner can fetch it; a guessed id is a 404 like a missing one.
    let fetch = |token: String, id: u64| {
        let http = server.http.clone();
        let url = server.url(&format!("/api/uploads/{id}"));
        async move { http.get(url).header("cookie", format!("token={token}")).send().await.unwrap() }
    };
    assert_eq!(fetch(alice.clone(), image_id).await.status(), 200);
    let guessed = fetch(bob.clone(), image_id).await;
    let missing = fetch(bob.clone(), 999_999).await;
    assert_eq!((guessed.status(), missing.status()), (reqwest::StatusCode::NOT_FOUND, reqwest::StatusCode::NOT_FOUND));
    assert_eq!(guessed.text().await.unwrap(), missing.text().await.unwrap());

    // Shared in a private room: its members fetch it; nobody else does.
    server.call("POST", "/api/channels", &alice, json!({"name": "inner", "private": true})).await;
    server.call("POST", "/api/channels/inner/members", &alice, json!({"username": "bob"})).await;
    let (mut a, _) = server.connect_hello(&alice).await;
    let (mut b, _) = server.connect_hello(&bob).await;
    join_and_replay(&mut a, "inner", None).await;
    join_and_replay(&mut b, "inner", None).await;
    a.send(&send_files("inner", 1, "", vec![image_id, page_id])).await;
    ack(&mut a).await;
    let live = message(&mut b).await;
    let names: Vec<&str> = live.attachments.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["cat.png", "page.html"]);
    assert_eq!(live.attachments[0].size, PNG.len() as u64);

    let shown = fetch(bob.clone(), image_id).await;
    assert_eq!(shown.status(), 200);
    let header = |r: &reqwest::Response, h: &str| r.headers().get(h).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header(&shown, "content-type").as_deref(), Some("image/png"));
    assert!(header(&shown, "content-disposition").unwrap().starts_with("inline;"));
    assert_eq!(header(&shown, "x-content-type-options").as_deref(), Some("nosniff"));
    assert!(header(&shown, "content-security-policy").unwrap().starts_with("sandbox"));
    assert_eq!(shown.bytes().await.unwrap().as_ref(), PNG);
    let download = fetch(bob.clone(), page_id).await;
    assert!(header(&download, "content-disposition").unwrap().starts_with("attachment;"), "HTML is never inline");
    assert_eq!(header(&download, "x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(fetch(carol.clone(), image_id).await.status(), 404, "not a member of the room");

    // Each file is attached once, by its owner only.
    a.send(&send_files("inner", 2, "again", vec![image_id])).await;
    assert_eq!(a.recv_until(pick::error).await.code, ErrorCode::BadRequest.code());
    let (_, mine) = upload(&server, &bob, "b.txt", "text/plain", b"bob's").await;
    a.send(&send_files("inner", 3, "not mine", vec![mine["upload"]["id"].as_u64().unwrap()])).await;
    assert_eq!(a.recv_until(pick::error).await.code, ErrorCode::BadRequest.code());

    // Removing bob from the room removes his access to what was shared there.
    let (removed, _) = server.call("DELETE", "/api/channels/inner/members/bob", &alice, Value::Null).await;
    assert_eq!(removed, 204);
    assert_eq!(fetch(bob.clone(), image_id).await.status(), 404);
}

#[tokio::test]
async fn a_read_mark_reaches_the_users_other_tabs_and_an_invitation_announces_the_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (mut tab1, _) = server.connect_hello(&alice).await;
    let (mut tab2, _) = server.connect_hello(&alice).await;
    let (mut other, _) = server.connect_hello(&bob).await;
    join_and_replay(&mut tab1, "design", None).await;
    join_and_replay(&mut other, "design", None).await;
    for i in 1..=3 {
        other.send(&send("design", i, "news")).await;
        ack(&mut other).await;
    }
    tab1.send(&ClientFrame::MarkRead(wire::MarkRead { room: "design".into(), seq: 2 })).await;
    let read_state = |f| if let ServerFrame::ReadState(r) = f { Some(r) } else { None };
    for tab in [&mut tab1, &mut tab2] {
        let state = tab.recv_until(read_state).await;
        assert_eq!((state.room.as_str(), state.last_read_seq), ("design", 2), "also the tab not in the room");
    }
    // Another user's connections hear nothing of it: a ping answered first proves it.
    other.send(&ClientFrame::Ping(wire::Ping { nonce: 1 })).await;
    let first = other
        .recv_until(|f| match f {
            ServerFrame::ReadState(_) => Some(false),
            ServerFrame::Pong(_) => Some(true),
            _ => None,
        })
        .await;
    assert!(first);
    // Over HTTP too, and never backwards.
    let (_, mark) = server.call("POST", "/api/channels/design/read", &alice, json!({"seq": 1})).await;
    assert_eq!(mark["last_read_seq"], 2);
    assert_eq!(tab2.recv_until(read_state).await.last_read_seq, 2);

    // Invited: every connection of bob learns the room's name.
    server.call("POST", "/api/channels", &alice, json!({"name": "plans", "private": true})).await;
    server.call("POST", "/api/channels/plans/members", &alice, json!({"username": "bob"})).await;
    let added = other.recv_until(|f| if let ServerFrame::RoomAdded(r) = f { Some(r) } else { None }).await;
    assert_eq!(added.room, "plans");
}

#[tokio::test]
async fn files_served_at_once_are_bounded_and_a_reader_that_stops_frees_its_slot_when_it_goes() {
    use tokio::io::AsyncWriteExt;
    const SIZE: usize = 8 << 20; // more than a socket's send buffer can hold (4 MiB here)
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |c| c.max_upload_bytes = SIZE).await;
    let alice = server.register("alice").await;
    let (status, file) = upload(&server, &alice, "big.bin", "application/octet-stream", &vec![1; SIZE]).await;
    assert_eq!(status, 201);
    let id = file["upload"]["id"].as_u64().unwrap();
    let request = format!("GET /api/uploads/{id} HTTP/1.1\r\nHost: {}\r\nCookie: token={alice}\r\n\r\n", server.addr);

    // Readers that never read: each holds one of the 16 slots while its bytes wait to be written.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = socket.connect(server.addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        stalled.push(tcp);
    }
    let fetch =
        || server.http.get(server.url(&format!("/api/uploads/{id}"))).header("cookie", format!("token={alice}")).send();
    // The stalled requests reach the handler in their own time: wait until they hold every slot.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let refused = loop {
        assert!(std::time::Instant::now() < deadline, "never refused: downloads are not bounded");
        let response = fetch().await.unwrap();
        if response.status() == 503 {
            break response;
        }
        assert_eq!(response.bytes().await.unwrap().len(), SIZE);
    };
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    // One goes away: its slot is free again, and a full download works.
    drop(stalled.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let response = fetch().await.unwrap();
        if response.status() == 200 {
            assert_eq!(response.bytes().await.unwrap().len(), SIZE);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot of a closed reader was never freed");
    }
}

#[tokio::test]
async fn an_overloaded_store_queue_refuses_sends_at_once_in_order_while_the_connection_keeps_reading() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| {
        c.writers = Some(1);
        c.store_queue = 4;
        c.send_burst = 100;
    })
    .await;
    let (mut a, mut b) = alice_and_bob_in(&server, "general").await;

    // The database is locked by someone else: the writer's first batch waits in its commit.
    let db = rusqlite::Connection::open(server.dir.path().join("socketchat.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    a.send(&send("general", 1, "m1")).await;
    server.metric_until("store_batches_total", |v| v >= 1).await;
    // Four more fill the queue; the next 25 are refused at once, while the store is still stuck.
    for id in 2..=30u8 {
        a.send(&send("general", id, &format!("m{id}"))).await;
    }
    server.metric_until("sends_shed_total", |v| v >= 25).await;
    assert_eq!(server.metric("sends_shed_total").await, 25, "only what did not fit was refused");
    // The sender's connection still reads and answers: it is not stuck behind its sends.
    a.send(&ClientFrame::Ping(wire::Ping { nonce: 77 })).await;
    loop {
        match a.recv().await {
            ServerFrame::Pong(p) => {
                assert_eq!(p.nonce, 77);
                break;
            }
            ServerFrame::Ack(_) | ServerFrame::Error(_) | ServerFrame::Message(_) => {
                panic!("nothing can be answered while the store is locked")
            }
            _ => {}
        }
    }
    db.execute_batch("ROLLBACK").unwrap();

    // Answers come in send order: the five that were queued are stored, the rest refused with
    // a retry hint, each naming its send.
    let mut seqs = Vec::new();
    for id in 1..=30u8 {
        let answer = a
            .recv_until(|f| match f {
                ServerFrame::Ack(ack) => Some(Ok(ack)),
                ServerFrame::Error(e) => Some(Err(e)),
                _ => None,
            })
            .await;
        match answer {
            Ok(ack) if id <= 5 => {
                assert_eq!(ack.client_msg_id, [id; 16]);
                seqs.push(ack.seq);
            }
            Err(e) if id > 5 => {
                assert_eq!(e.code, ErrorCode::Unavailable.code(), "{e:?}");
                assert_eq!(e.client_msg_id, Some([id; 16]));
                assert!(e.retry_after_ms.is_some_and(|ms| ms > 0), "{e:?}");
                assert!(e.message.contains("overloaded"), "{e:?}");
            }
            other => panic!("send {id}: {other:?}"),
        }
    }
    // Retried with the same ids, the refused sends are stored, once each, after the others.
    for id in 6..=30u8 {
        a.send(&send("general", id, &format!("m{id}"))).await;
        seqs.push(ack(&mut a).await.seq);
    }
    assert_eq!(seqs, (1..=30).collect::<Vec<u64>>());
    for id in 1..=30u8 {
        let m = message(&mut b).await;
        assert_eq!((m.seq, m.text), (u64::from(id), format!("m{id}")));
    }
    assert_eq!(server.metric("messages_stored_total").await, 30);
}

/// Someone else holds the embedded database's write lock longer than the store timeout: the
/// sender hears that the outcome is unknown (never "not stored"), the send commits once the lock
/// goes, the room's members receive it live, and the sender's retry gets the original ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_send_that_outlasts_the_store_timeout_is_announced_when_it_commits() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| c.store_timeout_ms = 300).await;
    let (mut a, mut b) = alice_and_bob_in(&server, "general").await;

    let db = rusqlite::Connection::open(server.dir.path().join("socketchat.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    a.send(&send("general", 1, "held up")).await;
    let err = a.recv_until(pick::error).await;
    assert_eq!((err.code, err.client_msg_id), (ErrorCode::Unavailable.code(), Some([1; 16])), "{err:?}");
    assert!(err.message.contains("may still be stored"), "the outcome is unknown: {}", err.message);
    db.execute_batch("ROLLBACK").unwrap();

    let delivered = message(&mut b).await;
    assert_eq!((delivered.seq, delivered.text.as_str()), (1, "held up"), "announced once it committed");
    a.send(&send("general", 1, "held up")).await;
    let retried = ack(&mut a).await;
    assert_eq!((retried.seq, retried.message_id), (1, delivered.message_id), "the original row");
    assert_eq!(server.metric("messages_stored_total").await, 1, "stored once");
}

#[tokio::test]
async fn a_client_that_has_seen_past_what_this_node_delivered_is_told_the_stored_head() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (mut a, _) = server.connect_hello(&alice).await;
    join_and_replay(&mut a, "general", None).await;
    a.send(&send("general", 1, "first")).await;
    assert_eq!(ack(&mut a).await.seq, 1);
    assert_eq!(message(&mut a).await.seq, 1);

    // Seq 2 is committed behind this node's back, as by another node whose relay is late: the
    // room is live here and has delivered seq 1 only.
    let db = rusqlite::Connection::open(server.dir.path().join("socketchat.db")).unwrap();
    db.execute_batch(
        "BEGIN IMMEDIATE;
         UPDATE rooms SET last_seq = 2 WHERE name = 'general';
         INSERT INTO messages (room_id, seq, sender_id, client_msg_id, text, sent_at_ms, kind, target_seq, attachments)
           SELECT r.id, 2, u.id, x'00000000000000000000000000000002', 'from elsewhere', 0, 0, NULL, ''
           FROM rooms r, users u WHERE r.name = 'general' AND u.username = 'alice';
         COMMIT;",
    )
    .unwrap();

    // A client that saw seq 2 (on that other node) resumes here: its head is the stored one,
    // never below what it has (which would tell it to drop its cache).
    let (mut b, _) = server.connect_hello(&bob).await;
    let (joined, replay) = join_and_replay(&mut b, "general", Some(2)).await;
    assert_eq!((joined.head_seq, joined.replay_from, replay.len()), (2, 3, 0));
    // A fresh join takes this node's head; seq 2 reaches it live once the node catches up.
    let (mut c, _) = server.connect_hello(&bob).await;
    let (fresh, _) = join_and_replay(&mut c, "general", None).await;
    assert!(fresh.head_seq <= 2);
    // The node catches up with the store by itself: everyone gets seq 2, once, in order.
    assert_eq!(message(&mut a).await.seq, 2);
    if fresh.head_seq < 2 {
        assert_eq!(message(&mut c).await.seq, 2);
    }
    b.send(&send("general", 3, "after")).await;
    assert_eq!(ack(&mut b).await.seq, 3);
    assert_eq!(message(&mut a).await.seq, 3);
    assert_eq!(message(&mut c).await.seq, 3);
}

/// At its cap of sends in flight (64) the server stops reading a connection, so the answer to
/// its lag probe waits in the socket too: a client whose sends wait for a stalled store must not
/// be cut as slow (4001) for an answer the server did not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_its_cap_of_sends_in_flight_is_not_cut_for_a_probe_answer_the_server_did_not_read() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| {
        c.max_lag_ms = 100;
        c.store_timeout_ms = 1500;
        c.send_burst = 200;
        c.send_rate_per_sec = 200;
    })
    .await;
    // A bare WebSocket: the test watches the server's Pings, which a client library hides.
    let (alice, bob, carol) =
        (server.register("alice").await, server.register("bob").await, server.register("carol").await);
    let (mut a, _) = server.connect_hello_raw(&alice).await;
    let (mut _b, _) = server.connect_hello(&bob).await;
    join_and_replay(&mut a, "general", None).await;
    join_and_replay(&mut _b, "general", None).await;
    let db = rusqlite::Connection::open(server.dir.path().join("socketchat.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    for n in 0..63 {
        a.send(&send_numbered("general", n, "held up")).await;
    }
    // The Pong proves the server has read the 63 sends; the 64th then reaches the cap.
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    a.send(&ClientFrame::Ping(wire::Ping { nonce: 7 })).await;
    a.recv_until(|f| matches!(f, ServerFrame::Pong(p) if p.nonce == 7).then_some(())).await;
    a.send(&send_numbered("general", 63, "held up")).await;
    // The server probes at most every max_lag / 2: past that interval, the next write to alice
    // carries a probe. (A wait for time itself, which no event marks.)
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Carol arrives: alice is written a RoomPresence, with a lag probe (100 ms) that her client
    // answers while the server reads nothing from her.
    let (mut c, _) = server.connect_hello(&carol).await;
    join_and_replay(&mut c, "general", None).await;
    // Probes written after the cap, before the first answer: the server reads none of theirs.
    let (mut answered, mut probes, mut saw_carol) = (0, 0, false);
    while answered < 64 {
        let next = tokio::time::timeout(WAIT, a.ws.next()).await.expect("a frame within the wait");
        match next.expect("open").expect("no transport error") {
            // Her client answers it (tungstenite queues the Pong and sends it as it reads on).
            Message::Ping(_) if answered == 0 => probes += 1,
            Message::Binary(bytes) => match wire::decode::<ServerFrame>(&bytes, usize::MAX).unwrap() {
                ServerFrame::Error(e) if e.client_msg_id.is_some() => answered += 1,
                ServerFrame::GoAway(g) => panic!("cut after {answered} answers ({probes} probes): {g:?}"),
                ServerFrame::RoomPresence(p) => saw_carol |= p.users.iter().any(|u| u.username == "carol"),
                _ => {}
            },
            Message::Close(close) => panic!("closed after {answered} answers ({probes} probes): {close:?}"),
            _ => {}
        }
    }
    assert!(saw_carol && probes > 0, "alice was probed while the server was not reading her: {probes} probes");
    // A connection cut as slow says so once its sends are answered: alice must still be served.
    a.send(&ClientFrame::Ping(wire::Ping { nonce: 8 })).await;
    let pong = a
        .recv_until(|f| match f {
            ServerFrame::Pong(p) => Some(Ok(p.nonce)),
            ServerFrame::GoAway(g) => Some(Err(g)),
            _ => None,
        })
        .await;
    assert_eq!(pong, Ok(8), "alice was cut");
    db.execute_batch("ROLLBACK").unwrap();
}
