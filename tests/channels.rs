//! Channels users create, private membership, direct conversations and read marks, end to end
//! over HTTP and WebSocket on the embedded server. G7: a user who does not belong to a closed
//! room gets exactly the answers a room that does not exist gets, on every path.

mod support;

use serde_json::{Value, json};
use socketchat::wire::{self, ClientFrame, ErrorCode, ServerFrame};
use support::*;

async fn get(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    let response = server.get(path, token).await;
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

fn names(list: &Value) -> Vec<String> {
    list["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

/// The error a frame gets, with its code, room and request id.
async fn refusal(client: &mut User, frame: ClientFrame) -> (u16, Option<String>, Option<u32>) {
    client.send(&frame).await;
    let e = client.recv_until(pick::error).await;
    (e.code, e.room, e.request_id)
}

fn history(room: &str, request_id: u32) -> ClientFrame {
    ClientFrame::History(wire::HistoryRequest { request_id, room: room.into(), before_seq: None, limit: 10 })
}

fn typing(room: &str) -> ClientFrame {
    ClientFrame::Typing(wire::TypingUpdate { room: room.into(), active: true })
}

/// What a non-member sees of `room`, on every path, compared with a room that does not exist.
async fn assert_hidden(server: &TestServer, token: &str, room: &str) {
    let missing = "no-such-room";
    for path in ["/api/channels/{}/messages", "/api/presence/rooms/{}", "/api/channels/{}/members"] {
        let hidden = get(server, &path.replace("{}", room), token).await;
        let absent = get(server, &path.replace("{}", missing), token).await;
        assert_eq!(hidden.0, 404, "{path} for {room}");
        assert_eq!(hidden, absent, "{path}: the same answer as for a room that does not exist");
    }
    let hidden = server.call("POST", &format!("/api/channels/{room}/members"), token, json!({"username": "x"})).await;
    assert_eq!(hidden.0, 404, "invite to {room}");
    let hidden = server.call("POST", &format!("/api/channels/{room}/read"), token, json!({"seq": 1})).await;
    assert_eq!(hidden, server.call("POST", &format!("/api/channels/{missing}/read"), token, json!({"seq": 1})).await);
    let listed = names(&get(server, "/api/channels", token).await.1);
    assert!(!listed.contains(&room.to_owned()), "{room} listed to a non-member: {listed:?}");

    let (mut client, _) = server.connect_hello(token).await;
    let strip = |(code, room, request_id): (u16, Option<String>, Option<u32>), name: &str| {
        assert_eq!(room.as_deref(), Some(name));
        (code, request_id)
    };
    for (frame, other) in [
        (join(room, None), join(missing, None)),
        (
            ClientFrame::Switch(wire::Join { room: room.into(), after_seq: None }),
            ClientFrame::Switch(wire::Join { room: missing.into(), after_seq: None }),
        ),
        (history(room, 9), history(missing, 9)),
        (send(room, 1, "let me in"), send(missing, 1, "let me in")),
        (typing(room), typing(missing)),
    ] {
        let hidden = strip(refusal(&mut client, frame.clone()).await, room);
        let absent = strip(refusal(&mut client, other).await, missing);
        assert_eq!(hidden, absent, "{frame:?}");
        assert!(
            [ErrorCode::UnknownRoom.code(), ErrorCode::NotMember.code()].contains(&hidden.0),
            "{frame:?}: {hidden:?}"
        );
    }
    client.close().await;
}

#[tokio::test]
async fn channels_are_created_and_listed_and_private_ones_are_hidden_from_everyone_else() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let (status, created) = server
        .call("POST", "/api/channels", &alice, json!({"name": "team-a", "topic": "Team A things", "private": false}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["channel"]["kind"], "public");
    assert_eq!(created["channel"]["role"], "owner");
    let (status, _) = server.call("POST", "/api/channels", &alice, json!({"name": "secret", "private": true})).await;
    assert_eq!(status, 201);

    // Names, topics and duplicates.
    for bad in ["A", "x", "-lead", "with space", "@1-2", "general/x", &"y".repeat(33)] {
        let (status, body) = server.call("POST", "/api/channels", &alice, json!({"name": bad})).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["fields"]["name"].is_string(), "{body}");
    }
    let (status, body) =
        server.call("POST", "/api/channels", &alice, json!({"name": "okay", "topic": "a\u{7}b"})).await;
    assert_eq!((status, body["fields"]["topic"].is_string()), (400, true), "{body}");
    for taken in ["team-a", "secret", "general"] {
        let (status, _) = server.call("POST", "/api/channels", &bob, json!({"name": taken})).await;
        assert_eq!(status, 409, "{taken}");
    }
    let (status, _) = server.call("POST", "/api/channels", &bob, json!({"name": "x1", "extra": true})).await;
    assert_eq!(status, 400, "unknown fields are refused");
    let cross = server
        .http
        .post(server.url("/api/channels"))
        .header("cookie", format!("token={bob}"))
        .header("origin", "http://evil.example")
        .json(&json!({"name": "evil"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403, "cross-origin creation");
    let (status, _) = server.call("POST", "/api/channels", "not-a-token", json!({"name": "anon"})).await;
    assert_eq!(status, 401);

    assert_eq!(
        names(&get(&server, "/api/channels", &alice).await.1),
        ["general", "engineering", "design", "support", "team-a", "secret"]
    );
    assert_eq!(
        names(&get(&server, "/api/channels", &bob).await.1),
        ["general", "engineering", "design", "support", "team-a"]
    );

    // Anyone joins the public channel; the private one is for its members only.
    let (mut b, _) = server.connect_hello(&bob).await;
    let (joined, _) = join_and_replay(&mut b, "team-a", None).await;
    assert_eq!(joined.room, "team-a");
    b.close().await;
    assert_hidden(&server, &bob, "secret").await;

    // The owner uses it like any room.
    let (mut a, _) = server.connect_hello(&alice).await;
    join_and_replay(&mut a, "secret", None).await;
    a.send(&send("secret", 1, "just us")).await;
    assert_eq!(ack(&mut a).await.seq, 1);
    let (status, page) = get(&server, "/api/channels/secret/messages", &alice).await;
    assert_eq!((status, page["messages"][0]["text"].as_str()), (200, Some("just us")));
}

#[tokio::test]
async fn invited_members_join_and_a_removed_member_leaves_at_once_on_every_connection() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    server.call("POST", "/api/channels", &alice, json!({"name": "secret", "private": true})).await;

    let (status, body) = server.call("POST", "/api/channels/secret/members", &alice, json!({"username": "Bob"})).await;
    assert_eq!((status, body["member"]["username"].as_str()), (201, Some("bob")), "{body}");
    let (status, _) = server.call("POST", "/api/channels/secret/members", &alice, json!({"username": "bob"})).await;
    assert_eq!(status, 200, "inviting a member again changes nothing");
    let (status, _) = server.call("POST", "/api/channels/secret/members", &alice, json!({"username": "nobody"})).await;
    assert_eq!(status, 404);
    // A member who is not the owner neither invites nor removes.
    let (status, _) = server.call("POST", "/api/channels/secret/members", &bob, json!({"username": "carol"})).await;
    assert_eq!(status, 403);
    let (status, _) = server.call("DELETE", "/api/channels/secret/members/alice", &bob, Value::Null).await;
    assert_eq!(status, 403);
    let (status, _) = server.call("DELETE", "/api/channels/secret/members/alice", &alice, Value::Null).await;
    assert_eq!(status, 409, "the owner cannot leave");
    let (status, members) = get(&server, "/api/channels/secret/members", &bob).await;
    assert_eq!(status, 200);
    assert_eq!(
        members["members"],
        json!([
            {"id": members["members"][0]["id"], "username": "alice", "role": "owner"},
            {"id": members["members"][1]["id"], "username": "bob", "role": "member"},
        ])
    );
    assert_hidden(&server, &carol, "secret").await;

    // Bob in two tabs, both in the room; alice writes, both get it.
    let (mut a, _) = server.connect_hello(&alice).await;
    join_and_replay(&mut a, "secret", None).await;
    let mut tabs = Vec::new();
    for _ in 0..2 {
        let (mut b, _) = server.connect_hello(&bob).await;
        join_and_replay(&mut b, "general", None).await;
        join_and_replay(&mut b, "secret", None).await;
        tabs.push(b);
    }
    a.send(&send("secret", 1, "before")).await;
    ack(&mut a).await;
    for b in &mut tabs {
        assert_eq!(message(b).await.text, "before");
    }

    let (status, _) = server.call("DELETE", "/api/channels/secret/members/bob", &alice, Value::Null).await;
    assert_eq!(status, 204);
    for b in &mut tabs {
        let left = b.recv_until(|f| if let ServerFrame::Left(l) = f { Some(l) } else { None }).await;
        assert_eq!(left.room, "secret");
    }
    a.send(&send("secret", 2, "after")).await;
    ack(&mut a).await;
    for b in &mut tabs {
        // Nothing more of the room: the next frame about it is the refusal of a send. The
        // presence of general (sent when its timer fires) may come first, and says nothing of it.
        b.send(&send("secret", 9, "still here?")).await;
        loop {
            match b.recv().await {
                ServerFrame::RoomPresence(p) if p.room == "general" => continue,
                ServerFrame::Error(e) => {
                    assert_eq!((e.code, e.room.as_deref()), (ErrorCode::NotMember.code(), Some("secret")));
                    break;
                }
                other => panic!("expected the refusal, got {other:?}"),
            }
        }
    }
    // Still in general, which is unaffected.
    a.send(&join("general", None)).await;
    a.recv_until(pick::joined).await;
    a.send(&send("general", 3, "hello general")).await;
    ack(&mut a).await;
    for b in &mut tabs {
        assert_eq!(message(b).await.text, "hello general");
    }
    assert_hidden(&server, &bob, "secret").await;
    let (status, _) = server.call("DELETE", "/api/channels/secret/members/bob", &alice, Value::Null).await;
    assert_eq!(status, 404, "not a member any more");

    // A member may leave on their own; the room is hidden from them afterwards.
    server.call("POST", "/api/channels/secret/members", &alice, json!({"username": "carol"})).await;
    let (status, _) = server.call("DELETE", "/api/channels/secret/members/carol", &carol, Value::Null).await;
    assert_eq!(status, 204);
    assert_hidden(&server, &carol, "secret").await;
}

#[tokio::test]
async fn a_direct_conversation_is_found_again_from_both_sides_and_groups_have_a_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |c| c.max_dm_members = 3).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;

    let (status, first) = server.call("POST", "/api/dms", &alice, json!({"usernames": ["bob"]})).await;
    assert_eq!(status, 201, "{first}");
    let name = first["channel"]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with('@'), "{name}");
    assert_eq!(first["channel"]["kind"], "direct");
    let (status, again) = server.call("POST", "/api/dms", &bob, json!({"usernames": ["ALICE"]})).await;
    assert_eq!((status, again["channel"]["name"].as_str()), (200, Some(name.as_str())), "found from the other side");
    let members: Vec<&str> =
        again["channel"]["members"].as_array().unwrap().iter().map(|m| m["username"].as_str().unwrap()).collect();
    assert_eq!(members, ["alice", "bob"]);
    for token in [&alice, &bob] {
        assert!(names(&get(&server, "/api/channels", token).await.1).contains(&name));
    }

    // They talk; carol cannot see it.
    let (mut a, _) = server.connect_hello(&alice).await;
    let (mut b, _) = server.connect_hello(&bob).await;
    join_and_replay(&mut a, &name, None).await;
    join_and_replay(&mut b, &name, None).await;
    a.send(&send(&name, 1, "psst")).await;
    ack(&mut a).await;
    assert_eq!(message(&mut b).await.text, "psst");
    assert_hidden(&server, &carol, &name).await;
    let (status, _) = server.call("DELETE", &format!("/api/channels/{name}/members/bob"), &alice, Value::Null).await;
    assert_eq!(status, 400, "a direct conversation keeps its members");
    // Bob leaves it; when alice writes to him again, it is the same conversation, bob back in.
    let (status, _) = server.call("DELETE", &format!("/api/channels/{name}/members/bob"), &bob, Value::Null).await;
    assert_eq!(status, 204);
    let left = b.recv_until(|f| if let ServerFrame::Left(l) = f { Some(l) } else { None }).await;
    assert_eq!(left.room, name);
    assert_hidden(&server, &bob, &name).await;
    let (status, found) = server.call("POST", "/api/dms", &alice, json!({"usernames": ["bob"]})).await;
    assert_eq!((status, found["channel"]["name"].as_str()), (200, Some(name.as_str())));
    let added = b.recv_until(|f| if let ServerFrame::RoomAdded(r) = f { Some(r) } else { None }).await;
    assert_eq!(added.room, name);
    let (_, replay) = join_and_replay(&mut b, &name, Some(0)).await;
    assert_eq!(replay.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["psst"], "the history is kept");

    // Groups: a new room every time, up to the configured size (3 with the creator).
    let (status, group) = server.call("POST", "/api/dms", &alice, json!({"usernames": ["bob", "carol"]})).await;
    assert_eq!(status, 201, "{group}");
    let group_name = group["channel"]["name"].as_str().unwrap().to_owned();
    assert_ne!(group_name, name);
    assert_hidden(&server, &dave, &group_name).await;
    let (mut c, _) = server.connect_hello(&carol).await;
    join_and_replay(&mut c, &group_name, None).await;
    c.close().await;
    let (status, body) = server.call("POST", "/api/dms", &alice, json!({"usernames": ["bob", "carol", "dave"]})).await;
    assert_eq!(status, 400, "{body}");
    for (usernames, expected) in
        [(json!([]), 400), (json!(["alice"]), 400), (json!(["nobody"]), 404), (json!("bob"), 400)]
    {
        let (status, body) = server.call("POST", "/api/dms", &alice, json!({ "usernames": usernames })).await;
        assert_eq!(status, expected, "{usernames}: {body}");
    }
}

#[tokio::test]
async fn read_marks_only_move_up_and_drive_unread_counts() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (mut a, _) = server.connect_hello(&alice).await;
    join_and_replay(&mut a, "design", None).await;
    for i in 1..=4 {
        a.send(&send("design", i, &format!("m{i}"))).await;
        ack(&mut a).await;
    }
    let unread = |list: &Value, room: &str| {
        let c = list["channels"].as_array().unwrap().iter().find(|c| c["name"] == room).unwrap().clone();
        (c["head_seq"].as_u64().unwrap(), c["last_read_seq"].as_u64().unwrap(), c["unread"].as_u64().unwrap())
    };
    assert_eq!(unread(&get(&server, "/api/channels", &bob).await.1, "design"), (4, 0, 4));
    assert_eq!(unread(&get(&server, "/api/channels", &alice).await.1, "design"), (4, 0, 0), "one's own");
    let (status, body) = server.call("POST", "/api/channels/design/read", &bob, json!({"seq": 3})).await;
    assert_eq!((status, body["last_read_seq"].as_u64()), (200, Some(3)));
    let (_, body) = server.call("POST", "/api/channels/design/read", &bob, json!({"seq": 1})).await;
    assert_eq!(body["last_read_seq"].as_u64(), Some(3), "never down");
    assert_eq!(unread(&get(&server, "/api/channels", &bob).await.1, "design"), (4, 3, 1));
    let (_, body) = server.call("POST", "/api/channels/design/read", &bob, json!({"seq": 99})).await;
    assert_eq!(body["last_read_seq"].as_u64(), Some(4), "never past the head");
    for bad in [json!({"seq": -1}), json!({"seq": "3"}), json!({}), json!({"seq": 1, "x": 2})] {
        let (status, _) = server.call("POST", "/api/channels/design/read", &bob, bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
    }
}

#[tokio::test]
async fn creating_rooms_and_moving_read_marks_over_http_are_throttled_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |c| c.room_creation_burst = 2).await;
    let alice = server.register("alice").await;
    server.register("bob").await;
    server.register("carol").await;
    let (status, _) = server.call("POST", "/api/channels", &alice, json!({"name": "one"})).await;
    assert_eq!(status, 201);
    let (status, _) = server.call("POST", "/api/dms", &alice, json!({"usernames": ["bob"]})).await;
    assert_eq!(status, 201, "a new conversation takes the second token");
    let (status, _) = server.call("POST", "/api/dms", &alice, json!({"usernames": ["carol"]})).await;
    assert_eq!(status, 429, "a third new room in the burst");
    let (status, _) = server.call("POST", "/api/channels", &alice, json!({"name": "two"})).await;
    assert_eq!(status, 429);
    let (status, _) = server.call("POST", "/api/dms", &alice, json!({"usernames": ["bob"]})).await;
    assert_eq!(status, 200, "finding an existing conversation never counts");

    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(server.call("POST", "/api/channels/general/read", &alice, json!({"seq": 0})).await.0);
    }
    // 20 in the burst; beyond it, refused (a token comes back every half second, so a slow
    // machine may see one more admitted).
    assert!(statuses[..20].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[20..].contains(&429), "{statuses:?}");
}
