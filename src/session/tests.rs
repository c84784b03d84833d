//! Session state machine tests: frames in, actions out, time passed in. No sockets.

use super::*;
use crate::hub::Topic;
use crate::store::Room;

const CMID: ClientMsgId = [7; 16];

fn rooms() -> Arc<RoomDirectory> {
    Arc::new(RoomDirectory::new(
        ["general", "design"]
            .iter()
            .enumerate()
            .map(|(i, n)| Room {
                id: i as u64 + 1,
                name: (*n).into(),
                topic: String::new(),
                kind: crate::store::RoomKind::Public,
            })
            .collect(),
    ))
}

fn alice() -> UserRef {
    UserRef { id: 10, username: "alice".into() }
}

fn session(now: Instant) -> Session {
    Session::new(alice(), 99, rooms(), now, now + Duration::from_secs(3600))
}

fn drain(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn greeted(now: Instant) -> Session {
    let mut s = session(now);
    s.handle_frame(now, ClientFrame::Hello(Hello { version: PROTOCOL_VERSION, client: "test".into() }));
    drain(&mut s);
    s
}

fn stored(seq: u64) -> StoredMessage {
    StoredMessage {
        id: 100 + seq,
        room_id: 1,
        seq,
        sender_id: 10,
        sender_name: "alice".into(),
        client_msg_id: [seq as u8; 16],
        text: format!("m{seq}"),
        sent_at_ms: 5,
        kind: MessageKind::Post,
        target_seq: None,
        edited_at_ms: None,
        deleted: false,
        attachments: Vec::new(),
    }
}

fn live(seq: u64) -> Event {
    Event {
        topic: crate::hub::Topic::Room(1),
        kind: EventKind::Message { seq },
        from_user: 20,
        bytes: Bytes::from(vec![seq as u8]),
    }
}

fn error_code(action: &Action) -> Option<u16> {
    match action {
        Action::Send(ServerFrame::Error(e)) => Some(e.code),
        _ => None,
    }
}

fn join(s: &mut Session, now: Instant, room: &str, after_seq: Option<u64>) -> Vec<Action> {
    s.handle_frame(now, ClientFrame::Join(Join { room: room.into(), after_seq }));
    drain(s)
}

#[test]
fn hello_must_come_first_and_gets_welcome_only() {
    let now = Instant::now();
    let mut s = session(now);
    s.handle_frame(now, ClientFrame::Ping(Ping { nonce: 1 }));
    assert!(matches!(drain(&mut s).as_slice(), [Action::Close(CloseCode::HelloRequired, _)]));
    assert!(s.is_closed());

    let mut s = session(now);
    s.handle_frame(now, ClientFrame::Hello(Hello { version: PROTOCOL_VERSION, client: "t".into() }));
    let actions = drain(&mut s);
    assert!(
        matches!(actions.as_slice(), [Action::Send(ServerFrame::Welcome(w))] if w.user == alice() && w.connection_id == 99 && w.version == 3),
        "no list of everyone online since v2: {actions:?}"
    );
    s.handle_frame(now, ClientFrame::Hello(Hello { version: PROTOCOL_VERSION, client: "t".into() }));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::AlreadyGreeted.code()));
}

#[test]
fn unsupported_version_is_terminal_and_names_the_version_spoken() {
    for version in [1, 2, 4] {
        let now = Instant::now();
        let mut s = session(now);
        s.handle_frame(now, ClientFrame::Hello(Hello { version, client: "t".into() }));
        let actions = drain(&mut s);
        let [Action::Close(CloseCode::UnsupportedVersion, reason)] = actions.as_slice() else {
            panic!("version {version}: {actions:?}");
        };
        assert_eq!(reason, &format!("protocol version {version} is not supported; this server speaks 3"));
    }
}

#[test]
fn a_client_name_over_64_bytes_is_a_bad_request_and_hello_can_be_sent_again() {
    let now = Instant::now();
    let mut s = session(now);
    s.handle_frame(now, ClientFrame::Hello(Hello { version: PROTOCOL_VERSION, client: "x".repeat(65) }));
    let actions = drain(&mut s);
    assert_eq!(actions.len(), 1);
    assert_eq!(error_code(&actions[0]), Some(ErrorCode::BadRequest.code()));
    assert!(!s.is_closed());
    s.handle_frame(now, ClientFrame::Hello(Hello { version: PROTOCOL_VERSION, client: "x".repeat(64) }));
    assert!(matches!(drain(&mut s).as_slice(), [Action::Send(ServerFrame::Welcome(_))]));
}

#[test]
fn frames_right_after_hello_are_all_handled_in_order() {
    let now = Instant::now();
    let mut s = session(now);
    s.handle_frame(now, ClientFrame::Hello(Hello { version: PROTOCOL_VERSION, client: "t".into() }));
    s.handle_frame(now, ClientFrame::Join(Join { room: "general".into(), after_seq: None }));
    for i in 0..20u8 {
        s.handle_frame(
            now,
            ClientFrame::Send(Send {
                room: "general".into(),
                client_msg_id: [i; 16],
                text: "x".into(),
                attachments: Vec::new(),
            }),
        );
    }
    let appends: Vec<u8> = drain(&mut s)
        .into_iter()
        .filter_map(|a| match a {
            Action::Append(m) => Some(m.client_msg_id[0]),
            _ => None,
        })
        .collect();
    assert_eq!(appends, (0..20).collect::<Vec<_>>());
}

#[test]
fn replay_range_covers_what_was_missed_up_to_the_limit() {
    assert_eq!(replay_range(None, 10), (11, 10));
    assert_eq!(replay_range(Some(4), 10), (5, 10));
    assert_eq!(replay_range(Some(10), 10), (11, 10));
    assert_eq!(replay_range(Some(50), 10), (11, 10), "a client ahead of the store gets nothing");
    assert_eq!(replay_range(Some(0), 10_000), (10_000 - MAX_REPLAY + 1, 10_000));
}

#[test]
fn join_replays_then_releases_held_live_events_without_duplicates() {
    let now = Instant::now();
    let mut s = greeted(now);
    assert_eq!(join(&mut s, now, "general", Some(1)), vec![Action::Join { room_id: 1, after_seq: Some(1) }]);
    // Live events arrive while the replay is read: 3 is also in the replay, 4 and 5 are not.
    s.handle_event(live(3));
    s.handle_event(live(4));
    s.handle_event(live(5));
    assert!(drain(&mut s).is_empty(), "held until the replay is sent");
    let presence = wire::encode_bytes(&ServerFrame::RoomPresence(RoomPresence {
        room: "general".into(),
        online: 1,
        users: vec![alice()].into(),
    }));
    s.handle_joined(1, 3, vec![stored(2), stored(3)], Some(presence.clone()));
    let actions = drain(&mut s);
    assert!(matches!(&actions[0], Action::Send(ServerFrame::Joined(j)) if j.head_seq == 3 && j.replay_from == 2));
    assert!(matches!(&actions[1], Action::Send(ServerFrame::Message(m)) if m.seq == 2));
    assert!(matches!(&actions[2], Action::Send(ServerFrame::Message(m)) if m.seq == 3));
    assert_eq!(actions[3..5], [Action::Forward(Bytes::from(vec![4])), Action::Forward(Bytes::from(vec![5]))]);
    assert_eq!(actions[5..], [Action::Forward(presence)], "presence once the room is live");
    s.handle_event(live(5));
    s.handle_event(live(6));
    assert_eq!(drain(&mut s), vec![Action::Forward(Bytes::from(vec![6]))], "seq 5 is not sent twice");
}

#[test]
fn joining_a_joined_room_again_continues_from_what_was_sent() {
    let now = Instant::now();
    let mut s = greeted(now);
    join(&mut s, now, "general", Some(0));
    s.handle_joined(1, 6, (1..=6).map(stored).collect(), None);
    drain(&mut s);
    // Asking again from 2 (or with no seq at all) replays nothing already sent: from 7.
    for after in [Some(2), None, Some(6)] {
        assert_eq!(join(&mut s, now, "general", after), vec![Action::Join { room_id: 1, after_seq: Some(6) }]);
        s.handle_joined(1, 6, vec![], None);
        let actions = drain(&mut s);
        assert!(
            matches!(actions.as_slice(), [Action::Send(ServerFrame::Joined(j))] if j.replay_from == 7),
            "{after:?}: {actions:?}"
        );
    }
    // Ahead of what was sent: from there.
    assert_eq!(join(&mut s, now, "general", Some(9)), vec![Action::Join { room_id: 1, after_seq: Some(9) }]);
}

#[test]
fn only_members_send_and_type_and_sends_are_validated() {
    let now = Instant::now();
    let mut s = greeted(now);
    let send = |text: &str, room: &str| {
        ClientFrame::Send(Send { room: room.into(), client_msg_id: CMID, text: text.into(), attachments: Vec::new() })
    };
    s.handle_frame(now, send("hi", "general"));
    let a = drain(&mut s);
    assert_eq!(error_code(&a[0]), Some(ErrorCode::NotMember.code()));
    assert!(matches!(&a[0], Action::Send(ServerFrame::Error(e)) if e.client_msg_id == Some(CMID)));
    s.handle_frame(now, ClientFrame::Typing(TypingUpdate { room: "general".into(), active: true }));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::NotMember.code()));
    // A room not joined gets the same answer whether it exists or not (a private room's
    // existence is not revealed to non-members).
    s.handle_frame(now, send("hi", "nope"));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::NotMember.code()));
    s.handle_frame(now, ClientFrame::Typing(TypingUpdate { room: "nope".into(), active: true }));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::NotMember.code()));

    join(&mut s, now, "general", None);
    // Each refusal says which fault it is: a blank text is not told that it is too long.
    let message = |s: &mut Session| match &drain(s)[..] {
        [Action::Send(ServerFrame::Error(e))] if e.code == ErrorCode::InvalidText.code() => e.message.clone(),
        other => panic!("expected InvalidText, got {other:?}"),
    };
    s.handle_frame(now, send(" \u{85}\u{3000} ", "general"));
    assert_eq!(message(&mut s), "text is empty or only whitespace");
    s.handle_frame(now, send(&"x".repeat(MAX_TEXT_BYTES + 1), "general"));
    assert_eq!(message(&mut s), "text is 4001 bytes; at most 4000");
    s.handle_frame(now, send(&" ".repeat(MAX_TEXT_BYTES + 1), "general"));
    assert_eq!(message(&mut s), "text is 4001 bytes; at most 4000", "the length is checked first");
    s.handle_frame(now, send("nul \0 inside", "general"));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::InvalidText.code()), "PostgreSQL cannot store U+0000");
    s.handle_frame(now, send("hello", "general"));
    assert!(matches!(&drain(&mut s)[..], [Action::Append(m)] if m.text == "hello" && m.sender_id == 10));
}

#[test]
fn a_flood_is_counted_from_its_first_refusal_not_from_the_connection() {
    let start = Instant::now();
    let mut s = greeted(start);
    let refusals_then_closed = |s: &mut Session, at: Instant, joins: usize| {
        let (mut refused, mut closed) = (0, false);
        for _ in 0..joins {
            s.handle_frame(at, ClientFrame::Join(Join { room: "general".into(), after_seq: None }));
            for action in drain(s) {
                refused += usize::from(error_code(&action) == Some(ErrorCode::RateLimited.code()));
                closed |= matches!(action, Action::Close(CloseCode::Flood, _));
            }
        }
        (refused, closed)
    };
    // 100 refusals just before 10 s after the connection opened, then more than 100 within
    // the same 10 s of the first refusal: a flood, though the connection is 10 s old by then.
    let (first, closed) = refusals_then_closed(&mut s, start + Duration::from_millis(9_900), 120);
    assert_eq!((first, closed), (100, false));
    let (_, closed) = refusals_then_closed(&mut s, start + Duration::from_millis(10_500), 110);
    assert!(closed, "more than 200 refusals within 10 s of the first");
}

#[test]
fn sends_are_rate_limited_and_a_flood_closes() {
    let now = Instant::now();
    let mut s = greeted(now);
    join(&mut s, now, "general", None);
    let mut appended = 0;
    let mut limited = 0;
    for i in 0..(SEND_BURST + 5) {
        s.handle_frame(
            now,
            ClientFrame::Send(Send {
                room: "general".into(),
                client_msg_id: [i as u8; 16],
                text: "x".into(),
                attachments: Vec::new(),
            }),
        );
        for a in drain(&mut s) {
            match a {
                Action::Append(_) => appended += 1,
                Action::Send(ServerFrame::Error(e)) if e.code == ErrorCode::RateLimited.code() => {
                    assert!(e.retry_after_ms.unwrap() > 0);
                    limited += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!((appended, limited), (SEND_BURST, 5));
    // Retrying before the hint, again and again, is a flood.
    let mut closed = false;
    for _ in 0..FLOOD_REJECTIONS + 2 {
        s.handle_frame(
            now,
            ClientFrame::Send(Send {
                room: "general".into(),
                client_msg_id: CMID,
                text: "x".into(),
                attachments: Vec::new(),
            }),
        );
        closed |= drain(&mut s).iter().any(|a| matches!(a, Action::Close(CloseCode::Flood, _)));
    }
    assert!(closed);
}

#[test]
fn joins_switches_and_history_share_a_rate_limit() {
    let now = Instant::now();
    let mut s = greeted(now);
    for i in 0..READ_BURST {
        let frame = match i % 3 {
            0 => ClientFrame::Join(Join { room: "general".into(), after_seq: Some(0) }),
            1 => ClientFrame::Switch(Join { room: "general".into(), after_seq: Some(0) }),
            _ => ClientFrame::History(HistoryRequest {
                request_id: i,
                room: "general".into(),
                before_seq: None,
                limit: 100,
            }),
        };
        s.handle_frame(now, frame);
        assert!(error_code(drain(&mut s).last().unwrap()).is_none(), "request {i} is within the burst");
    }
    s.handle_frame(
        now,
        ClientFrame::History(HistoryRequest { request_id: 99, room: "general".into(), before_seq: None, limit: 100 }),
    );
    let refused = drain(&mut s);
    assert!(
        matches!(refused.as_slice(), [Action::Send(ServerFrame::Error(e))]
            if e.code == ErrorCode::RateLimited.code() && e.request_id == Some(99) && e.retry_after_ms == Some(200)),
        "{refused:?}"
    );
    s.handle_frame(now, ClientFrame::Switch(Join { room: "design".into(), after_seq: None }));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::RateLimited.code()), "a refused switch leaves nothing");
    assert_eq!(s.room_ids().collect::<Vec<_>>(), vec![1]);
    s.handle_frame(
        now + Duration::from_millis(200),
        ClientFrame::Join(Join { room: "design".into(), after_seq: None }),
    );
    assert!(matches!(drain(&mut s).as_slice(), [Action::Join { .. }]), "one more after 1/5 s");
}

#[test]
fn a_client_that_honours_retry_after_is_never_cut_however_many_sends_it_has_in_flight() {
    let t0 = Instant::now();
    let mut s = greeted(t0);
    join(&mut s, t0, "general", None);
    // Keeps 10 sends in flight for 60 s of simulated time; a refused one is retried, same id,
    // exactly when the server said.
    let mut next_id = 0u32;
    let mut waiting: Vec<(ClientMsgId, Instant)> = Vec::new();
    let mut appended = 0;
    for step in 0..6000u64 {
        let now = t0 + Duration::from_millis(step * 10);
        let due: Vec<ClientMsgId> = waiting.iter().filter(|(_, at)| *at <= now).map(|(id, _)| *id).collect();
        waiting.retain(|(_, at)| *at > now);
        let mut batch = due;
        while batch.len() + waiting.len() < 10 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&next_id.to_be_bytes());
            next_id += 1;
            batch.push(id);
        }
        for id in batch {
            s.handle_frame(
                now,
                ClientFrame::Send(Send {
                    room: "general".into(),
                    client_msg_id: id,
                    text: "x".into(),
                    attachments: Vec::new(),
                }),
            );
            for a in drain(&mut s) {
                match a {
                    Action::Append(_) => appended += 1,
                    Action::Send(ServerFrame::Error(e)) if e.code == ErrorCode::RateLimited.code() => {
                        let wait = Duration::from_millis(u64::from(e.retry_after_ms.unwrap()));
                        waiting.push((e.client_msg_id.unwrap(), now + wait));
                    }
                    other => panic!("at {step}: {other:?}"),
                }
            }
        }
    }
    // The burst, then the sustained rate for 60 s (within a token).
    let expected = SEND_BURST as i64 + 60 * SEND_RATE_PER_SEC as i64;
    assert!((appended as i64 - expected).abs() <= 1, "{appended} sends admitted, {expected} expected");
}

#[test]
fn switch_leaves_every_other_room_then_joins() {
    let now = Instant::now();
    let mut s = greeted(now);
    join(&mut s, now, "general", None);
    s.handle_frame(now, ClientFrame::Switch(Join { room: "design".into(), after_seq: Some(3) }));
    assert_eq!(
        drain(&mut s),
        vec![
            Action::Leave { room_id: 1 },
            Action::Send(ServerFrame::Left(Left { room: "general".into() })),
            Action::Join { room_id: 2, after_seq: Some(3) },
        ]
    );
    assert_eq!(s.room_ids().collect::<Vec<_>>(), vec![2]);
    s.handle_event(live(9));
    assert!(drain(&mut s).is_empty(), "events of a left room are dropped");
}

#[test]
fn idle_and_expired_connections_are_closed() {
    let now = Instant::now();
    let mut s = greeted(now);
    s.handle_timeout(now + Duration::from_secs(10));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), now + Duration::from_millis(IDLE_TIMEOUT_MS.into()));
    s.handle_timeout(now + Duration::from_millis(IDLE_TIMEOUT_MS.into()));
    assert!(matches!(drain(&mut s).as_slice(), [Action::Close(CloseCode::IdleTimeout, _)]));

    let mut s = Session::new(alice(), 1, rooms(), now, now + Duration::from_secs(5));
    assert_eq!(s.poll_timeout(), now + Duration::from_secs(5));
    s.handle_timeout(now + Duration::from_secs(5));
    assert!(matches!(drain(&mut s).as_slice(), [Action::Close(CloseCode::Unauthorized, _)]));
}

#[test]
fn a_history_of_limit_0_is_a_bad_request_whatever_the_room() {
    let now = Instant::now();
    let mut s = greeted(now);
    // Not a room this node knows: the limit is refused before the store is asked about it.
    s.handle_frame(
        now,
        ClientFrame::History(HistoryRequest { request_id: 4, room: "secret".into(), before_seq: None, limit: 0 }),
    );
    assert!(
        matches!(&drain(&mut s)[..], [Action::Send(ServerFrame::Error(e))]
            if e.code == ErrorCode::BadRequest.code() && e.request_id == Some(4) && e.room.as_deref() == Some("secret")),
        "Error 1 at once, no lookup"
    );
}

#[test]
fn a_reservation_belongs_to_its_room_and_the_same_id_elsewhere_is_another_send() {
    let t0 = Instant::now();
    let mut s = greeted(t0);
    join(&mut s, t0, "general", None);
    join(&mut s, t0, "design", None);
    let send = |s: &mut Session, now: Instant, room: &str, id: ClientMsgId| {
        s.handle_frame(
            now,
            ClientFrame::Send(Send { room: room.into(), client_msg_id: id, text: "x".into(), attachments: Vec::new() }),
        );
        drain(s)
    };
    for i in 0..SEND_BURST {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        assert!(matches!(&send(&mut s, t0, "general", id)[..], [Action::Append(_)]));
    }
    // The same id refused in both rooms: a reservation each, the second one token later.
    let mut at = Vec::new();
    for room in ["general", "design"] {
        match &send(&mut s, t0, room, CMID)[..] {
            [Action::Send(ServerFrame::Error(e))] if e.code == ErrorCode::RateLimited.code() => {
                at.push(t0 + Duration::from_millis(u64::from(e.retry_after_ms.unwrap())));
            }
            other => panic!("{room}: {other:?}"),
        }
    }
    assert!(at[1] > at[0], "design's send has a reservation of its own: {at:?}");
    // Each retry, at its time, is admitted on its own reservation.
    for (room, now) in [("design", at[1]), ("general", at[1])] {
        assert!(
            matches!(&send(&mut s, now, room, CMID)[..], [Action::Append(m)] if m.room_id == s.rooms.by_name(room).unwrap().id),
            "{room}'s retry admitted"
        );
    }
}

#[test]
fn history_limit_is_clamped_and_next_cursor_points_older() {
    let now = Instant::now();
    let mut s = greeted(now);
    s.handle_frame(
        now,
        ClientFrame::History(HistoryRequest { request_id: 4, room: "general".into(), before_seq: None, limit: 1000 }),
    );
    assert_eq!(
        drain(&mut s),
        vec![Action::History { request_id: 4, room_id: 1, before_seq: None, limit: MAX_HISTORY_PAGE }]
    );
    s.handle_history(4, 1, Ok(vec![stored(5), stored(6)]));
    assert!(
        matches!(&drain(&mut s)[0], Action::Send(ServerFrame::History(p)) if p.next_before == Some(5) && p.messages.len() == 2)
    );
    s.handle_history(4, 1, Ok(vec![stored(1)]));
    assert!(matches!(&drain(&mut s)[0], Action::Send(ServerFrame::History(p)) if p.next_before.is_none()));
}

#[test]
fn a_join_of_a_joined_room_that_fails_keeps_the_room_or_says_it_was_left() {
    let now = Instant::now();
    let mut s = greeted(now);
    join(&mut s, now, "general", None);
    s.handle_joined(1, 6, vec![], None);
    drain(&mut s);
    // Joined again, and the store (or the relay) fails: the error, and the connection stays in
    // the room, live from where it was (what arrived meanwhile follows, once).
    join(&mut s, now, "general", None);
    s.handle_event(live(7));
    s.handle_join_failed(1, &StoreError::Unavailable("down".into()));
    let actions = drain(&mut s);
    assert!(
        matches!(actions.as_slice(), [Action::Forward(b), Action::Send(ServerFrame::Error(e))]
            if b[..] == [7] && e.code == ErrorCode::Unavailable.code()),
        "{actions:?}"
    );
    s.handle_event(live(7));
    s.handle_event(live(8));
    assert!(matches!(drain(&mut s).as_slice(), [Action::Forward(b)] if b[..] == [8]), "7 is not sent twice");
    // A first join that fails: the error, and the connection is not in the room.
    join(&mut s, now, "design", None);
    s.handle_join_failed(2, &StoreError::Unavailable("down".into()));
    let actions = drain(&mut s);
    assert!(
        matches!(actions.as_slice(), [Action::Leave { room_id: 2 }, Action::Send(ServerFrame::Error(_))]),
        "{actions:?}"
    );
    // Joined twice in a row, the membership having ended: out of the room, and told so.
    join(&mut s, now, "general", None);
    join(&mut s, now, "general", None);
    drain(&mut s);
    s.handle_join_refused(1);
    let actions = drain(&mut s);
    assert!(
        matches!(actions.as_slice(), [Action::Leave { room_id: 1 }, Action::Send(ServerFrame::Error(e)), Action::Send(ServerFrame::Left(l))]
            if e.code == ErrorCode::UnknownRoom.code() && l.room == "general"),
        "{actions:?}"
    );
}

#[test]
fn store_failures_become_retryable_errors_never_acks() {
    let now = Instant::now();
    let mut s = greeted(now);
    s.handle_appended(1, CMID, Err(StoreError::Unavailable("down".into())));
    let a = drain(&mut s);
    assert!(matches!(&a[0], Action::Send(ServerFrame::Error(e))
        if e.code == ErrorCode::Unavailable.code() && e.client_msg_id == Some(CMID) && e.retry_after_ms.is_some()));
    s.handle_appended(1, CMID, Err(StoreError::Rejected("constraint".into())));
    let a = drain(&mut s);
    assert!(
        matches!(&a[0], Action::Send(ServerFrame::Error(e))
        if e.code == ErrorCode::BadRequest.code() && e.client_msg_id == Some(CMID) && e.retry_after_ms.is_none()),
        "refused data is terminal: {a:?}"
    );
}

#[test]
fn rooms_not_known_to_be_public_are_looked_up_and_refused_like_unknown_ones() {
    let now = Instant::now();
    let mut s = greeted(now);
    s.handle_frame(now, ClientFrame::Join(Join { room: "secret".into(), after_seq: Some(3) }));
    let lookup = Lookup::Join(Some(3));
    assert_eq!(drain(&mut s), vec![Action::Resolve { room: "secret".into(), lookup: lookup.clone() }]);
    // Not there, or not for this user: one answer for both.
    s.handle_resolved("secret".into(), lookup.clone(), Ok(None));
    let a = drain(&mut s);
    assert_eq!(error_code(&a[0]), Some(ErrorCode::UnknownRoom.code()));
    assert_eq!(s.room_ids().count(), 0);
    // The store failing is not "unknown": retry later.
    s.handle_resolved("secret".into(), lookup.clone(), Err(StoreError::Unavailable("down".into())));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::Unavailable.code()));

    // (The node's lookup caches the room it found, as here.)
    let room = Room { id: 77, name: "secret".into(), topic: String::new(), kind: RoomKind::Private };
    let secret = s.rooms.insert(room, |_| true);
    s.handle_resolved("secret".into(), lookup.clone(), Ok(Some(secret.clone())));
    assert_eq!(drain(&mut s), vec![Action::Join { room_id: 77, after_seq: Some(3) }]);
    s.handle_joined(77, 3, Vec::new(), None);
    drain(&mut s);

    // Joined again (or switched to) after the membership ended, the removal not here yet: the
    // lookup refuses, and the connection is out of the room, told so after the error (§ 6.2).
    for again in [lookup.clone(), Lookup::Switch(Some(3))] {
        s.handle_resolved("secret".into(), again, Ok(None));
        let a = drain(&mut s);
        assert!(
            matches!(a.as_slice(), [Action::Leave { room_id: 77 }, Action::Send(ServerFrame::Error(e)), Action::Send(ServerFrame::Left(l))]
                if e.code == ErrorCode::UnknownRoom.code() && l.room == "secret"),
            "{a:?}"
        );
        assert_eq!(s.room_ids().count(), 0);
        s.handle_resolved("secret".into(), lookup.clone(), Ok(Some(secret.clone())));
        s.handle_joined(77, 3, Vec::new(), None);
        drain(&mut s);
    }

    // History names its request in the refusal.
    s.handle_frame(
        now,
        ClientFrame::History(HistoryRequest { request_id: 5, room: "other".into(), before_seq: None, limit: 10 }),
    );
    let a = drain(&mut s);
    let [Action::Resolve { room, lookup }] = &a[..] else { panic!("{a:?}") };
    s.handle_resolved(room.clone(), lookup.clone(), Ok(None));
    match &drain(&mut s)[..] {
        [Action::Send(ServerFrame::Error(e))] => {
            assert_eq!((e.code, e.request_id), (ErrorCode::UnknownRoom.code(), Some(5)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_removed_member_leaves_the_room_at_once_and_a_refused_join_is_undone() {
    let now = Instant::now();
    let mut s = greeted(now);
    join(&mut s, now, "general", None);
    s.handle_joined(1, 0, Vec::new(), None);
    drain(&mut s);
    s.handle_event(Event { topic: Topic::Room(1), kind: EventKind::Removed, from_user: 10, bytes: Bytes::new() });
    assert_eq!(
        drain(&mut s),
        vec![Action::Leave { room_id: 1 }, Action::Send(ServerFrame::Left(Left { room: "general".into() }))]
    );
    assert_eq!(s.room_ids().count(), 0);
    s.handle_frame(
        now,
        ClientFrame::Send(Send {
            room: "general".into(),
            client_msg_id: CMID,
            text: "x".into(),
            attachments: Vec::new(),
        }),
    );
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::NotMember.code()));

    // A join whose membership check failed after subscribing is taken back.
    join(&mut s, now, "general", None);
    s.handle_join_refused(1);
    let a = drain(&mut s);
    assert_eq!(a[0], Action::Leave { room_id: 1 });
    assert_eq!(error_code(&a[1]), Some(ErrorCode::UnknownRoom.code()));
    assert_eq!(s.room_ids().count(), 0);
}

#[test]
fn edits_deletes_attachments_and_read_marks_are_validated_and_go_to_the_store() {
    let now = Instant::now();
    let mut s = greeted(now);
    let edit = |target_seq: u64, text: &str| {
        ClientFrame::Edit(Edit { room: "general".into(), client_msg_id: CMID, target_seq, text: text.into() })
    };
    let send_files = |text: &str, attachments: Vec<u64>| {
        ClientFrame::Send(Send { room: "general".into(), client_msg_id: CMID, text: text.into(), attachments })
    };
    // Not joined: refused like a send.
    for frame in [
        edit(1, "x"),
        ClientFrame::Delete(Delete { room: "general".into(), client_msg_id: CMID, target_seq: 1 }),
        ClientFrame::MarkRead(MarkRead { room: "general".into(), seq: 1 }),
    ] {
        s.handle_frame(now, frame.clone());
        assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::NotMember.code()), "{frame:?}");
    }
    join(&mut s, now, "general", None);

    s.handle_frame(now, edit(3, "  "));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::InvalidText.code()), "an edit needs text");
    s.handle_frame(now, edit(3, "better"));
    assert!(matches!(&drain(&mut s)[..],
        [Action::Append(m)] if m.kind == MessageKind::Edit && m.target_seq == Some(3) && m.text == "better"));
    s.handle_frame(now, ClientFrame::Delete(Delete { room: "general".into(), client_msg_id: [8; 16], target_seq: 3 }));
    assert!(matches!(&drain(&mut s)[..],
        [Action::Append(m)] if m.kind == MessageKind::Delete && m.target_seq == Some(3) && m.text.is_empty()));

    // Files: text may be empty with attachments; at most 10, none twice.
    s.handle_frame(now, send_files("", vec![5]));
    assert!(matches!(&drain(&mut s)[..], [Action::Append(m)] if m.attachments == [5] && m.needs_checks()));
    s.handle_frame(now, send_files("", vec![]));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::InvalidText.code()));
    s.handle_frame(now, send_files("x", (1..=11).collect()));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::BadRequest.code()));
    s.handle_frame(now, send_files("x", vec![4, 4]));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::BadRequest.code()));

    // Read marks: to the store, rate-limited.
    s.handle_frame(now, ClientFrame::MarkRead(MarkRead { room: "general".into(), seq: 9 }));
    assert_eq!(drain(&mut s), vec![Action::MarkRead { room_id: 1, seq: 9 }]);
    let mut limited = false;
    for _ in 0..MARK_BURST {
        s.handle_frame(now, ClientFrame::MarkRead(MarkRead { room: "general".into(), seq: 9 }));
        limited |= drain(&mut s).iter().any(|a| error_code(a) == Some(ErrorCode::RateLimited.code()));
    }
    assert!(limited, "read marks beyond the burst are refused");
    s.handle_marked(1, Err(StoreError::Unavailable("down".into())));
    assert_eq!(error_code(&drain(&mut s)[0]), Some(ErrorCode::Unavailable.code()));
}
