//! Writes `protocol/vectors/frames.jsonl`: one line per frame, the frame as JSON (serde's
//! externally tagged form) and its postcard bytes as hex. `cargo test` checks the committed file
//! against the codec, so regenerate it only together with a protocol change:
//! `cargo run --example vectors > protocol/vectors/frames.jsonl`.

use serde::Serialize;
use socketchat::wire::*;

fn line<T: Serialize>(name: &str, direction: &str, frame: &T) {
    let value = serde_json::json!({
        "name": name,
        "direction": direction,
        "frame": frame,
        "hex": hex::encode(encode(frame)),
    });
    println!("{value}");
}

fn main() {
    let id: ClientMsgId =
        [0x6f, 0x1c, 0x8a, 0x3e, 0x52, 0x04, 0x4b, 0x7d, 0x9a, 0x11, 0xe0, 0x2f, 0x33, 0xc4, 0x58, 0x90];
    let alice = UserRef { id: 1, username: "alice".into() };
    let c = "client_to_server";
    line("hello", c, &ClientFrame::Hello(Hello { version: 3, client: "web/1.0".into() }));
    line("join_live", c, &ClientFrame::Join(Join { room: "general".into(), after_seq: None }));
    line("join_resume", c, &ClientFrame::Join(Join { room: "general".into(), after_seq: Some(300) }));
    line("leave", c, &ClientFrame::Leave(Leave { room: "design".into() }));
    line("switch", c, &ClientFrame::Switch(Join { room: "support".into(), after_seq: Some(0) }));
    line(
        "send",
        c,
        &ClientFrame::Send(Send {
            room: "general".into(),
            client_msg_id: id,
            text: "héllo <b>".into(),
            attachments: vec![],
        }),
    );
    line(
        "send_with_attachments",
        c,
        &ClientFrame::Send(Send {
            room: "general".into(),
            client_msg_id: id,
            text: String::new(),
            attachments: vec![12, 300],
        }),
    );
    line(
        "edit",
        c,
        &ClientFrame::Edit(Edit { room: "general".into(), client_msg_id: id, target_seq: 306, text: "hello".into() }),
    );
    line("delete", c, &ClientFrame::Delete(Delete { room: "general".into(), client_msg_id: id, target_seq: 306 }));
    line("mark_read", c, &ClientFrame::MarkRead(MarkRead { room: "general".into(), seq: 306 }));
    line(
        "history",
        c,
        &ClientFrame::History(HistoryRequest {
            request_id: 7,
            room: "general".into(),
            before_seq: Some(151),
            limit: 50,
        }),
    );
    line(
        "history_newest",
        c,
        &ClientFrame::History(HistoryRequest { request_id: 8, room: "general".into(), before_seq: None, limit: 100 }),
    );
    line("typing", c, &ClientFrame::Typing(TypingUpdate { room: "general".into(), active: true }));
    line("ping", c, &ClientFrame::Ping(Ping { nonce: 1_700_000_000_123 }));

    let s = "server_to_client";
    line(
        "welcome",
        s,
        &ServerFrame::Welcome(Welcome {
            version: 3,
            user: alice.clone(),
            connection_id: 42,
            heartbeat_ms: HEARTBEAT_MS,
            limits: Limits {
                max_frame_bytes: 16384,
                max_text_bytes: 4000,
                max_rooms: 32,
                max_history_page: 100,
                sends_per_sec: 20,
                send_burst: 50,
            },
        }),
    );
    line(
        "room_presence",
        s,
        &ServerFrame::RoomPresence(RoomPresence {
            room: "general".into(),
            online: 130,
            users: vec![alice.clone(), UserRef { id: 2, username: "bob".into() }].into(),
        }),
    );
    line(
        "room_presence_empty",
        s,
        &ServerFrame::RoomPresence(RoomPresence { room: "design".into(), online: 0, users: Vec::new().into() }),
    );
    line("joined", s, &ServerFrame::Joined(Joined { room: "general".into(), head_seq: 305, replay_from: 301 }));
    line("left", s, &ServerFrame::Left(Left { room: "design".into() }));
    line(
        "ack",
        s,
        &ServerFrame::Ack(Ack {
            room: "general".into(),
            client_msg_id: id,
            seq: 306,
            message_id: 9001,
            sent_at_ms: 1_795_000_000_000,
        }),
    );
    let message = ChatMessage {
        room: "general".into(),
        seq: 306,
        message_id: 9001,
        sender: alice.clone(),
        client_msg_id: id,
        sent_at_ms: 1_795_000_000_000,
        text: "héllo <b>".into(),
        kind: MessageKind::Post,
        target_seq: None,
        edited_at_ms: None,
        deleted: false,
        attachments: vec![],
    };
    line("message", s, &ServerFrame::Message(message.clone()));
    line(
        "message_with_attachment_edited",
        s,
        &ServerFrame::Message(ChatMessage {
            seq: 307,
            message_id: 9002,
            text: "see the photo".into(),
            edited_at_ms: Some(1_795_000_060_000),
            attachments: vec![Attachment {
                id: 12,
                name: "cat.png".into(),
                content_type: "image/png".into(),
                size: 48_213,
            }],
            ..message.clone()
        }),
    );
    line(
        "message_deleted",
        s,
        &ServerFrame::Message(ChatMessage { text: String::new(), deleted: true, ..message.clone() }),
    );
    line(
        "message_edit_event",
        s,
        &ServerFrame::Message(ChatMessage {
            seq: 308,
            message_id: 9003,
            text: "héllo, edited".into(),
            kind: MessageKind::Edit,
            target_seq: Some(306),
            ..message.clone()
        }),
    );
    line(
        "message_delete_event",
        s,
        &ServerFrame::Message(ChatMessage {
            seq: 309,
            message_id: 9004,
            text: String::new(),
            kind: MessageKind::Delete,
            target_seq: Some(306),
            ..message.clone()
        }),
    );
    line("read_state", s, &ServerFrame::ReadState(ReadState { room: "general".into(), last_read_seq: 306 }));
    line("room_added", s, &ServerFrame::RoomAdded(RoomAdded { room: "@1-2".into() }));
    line(
        "history_page",
        s,
        &ServerFrame::History(HistoryPage {
            request_id: 7,
            room: "general".into(),
            messages: vec![message],
            next_before: Some(306),
        }),
    );
    line(
        "history_page_last",
        s,
        &ServerFrame::History(HistoryPage {
            request_id: 8,
            room: "general".into(),
            messages: vec![],
            next_before: None,
        }),
    );
    line(
        "typing_event",
        s,
        &ServerFrame::Typing(TypingEvent { room: "general".into(), user: alice.clone(), active: false }),
    );
    line("pong", s, &ServerFrame::Pong(Ping { nonce: 1_700_000_000_123 }));
    line(
        "error",
        s,
        &ServerFrame::Error(ErrorFrame {
            code: ErrorCode::RateLimited.code(),
            message: "too many sends".into(),
            room: Some("general".into()),
            client_msg_id: Some(id),
            request_id: None,
            retry_after_ms: Some(250),
        }),
    );
    line(
        "goaway",
        s,
        &ServerFrame::GoAway(GoAway { code: CloseCode::Slow.code(), reason: "outbound queue full".into() }),
    );
}
