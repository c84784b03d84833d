//! Checks the codec against every vector in `protocol/vectors/frames.jsonl`, and that every
//! frame type has at least one vector.

use super::*;
use serde_json::Value;
use std::collections::BTreeSet;

const VECTORS: &str = include_str!("../../protocol/vectors/frames.jsonl");

fn client_kind(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Hello(_) => "Hello",
        ClientFrame::Join(_) => "Join",
        ClientFrame::Leave(_) => "Leave",
        ClientFrame::Switch(_) => "Switch",
        ClientFrame::Send(_) => "Send",
        ClientFrame::History(_) => "History",
        ClientFrame::Typing(_) => "Typing",
        ClientFrame::Ping(_) => "Ping",
        ClientFrame::Edit(_) => "Edit",
        ClientFrame::Delete(_) => "Delete",
        ClientFrame::MarkRead(_) => "MarkRead",
    }
}

fn server_kind(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "Welcome",
        ServerFrame::RetiredOnline => "RetiredOnline",
        ServerFrame::Joined(_) => "Joined",
        ServerFrame::Left(_) => "Left",
        ServerFrame::Ack(_) => "Ack",
        ServerFrame::Message(_) => "Message",
        ServerFrame::History(_) => "History",
        ServerFrame::Typing(_) => "Typing",
        ServerFrame::RetiredPresence => "RetiredPresence",
        ServerFrame::Pong(_) => "Pong",
        ServerFrame::Error(_) => "Error",
        ServerFrame::GoAway(_) => "GoAway",
        ServerFrame::RoomPresence(_) => "RoomPresence",
        ServerFrame::ReadState(_) => "ReadState",
        ServerFrame::RoomAdded(_) => "RoomAdded",
    }
}

fn check<T>(frame_json: &Value, hex_bytes: &str) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let frame: T = serde_json::from_value(frame_json.clone()).expect("vector frame parses");
    let bytes = hex::decode(hex_bytes).expect("vector hex");
    assert_eq!(hex::encode(encode(&frame)), hex_bytes, "encoding of {frame:?}");
    assert_eq!(decode::<T>(&bytes, usize::MAX).expect("vector decodes"), frame);
    frame
}

#[test]
fn codec_matches_every_vector_and_every_frame_type_has_one() {
    let mut client = BTreeSet::new();
    let mut server = BTreeSet::new();
    for line in VECTORS.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("vector line is JSON");
        let hex = v["hex"].as_str().expect("hex");
        match v["direction"].as_str() {
            Some("client_to_server") => {
                client.insert(client_kind(&check::<ClientFrame>(&v["frame"], hex)));
            }
            Some("server_to_client") => {
                server.insert(server_kind(&check::<ServerFrame>(&v["frame"], hex)));
            }
            other => panic!("unknown direction {other:?}"),
        }
    }
    assert_eq!(client.len(), 11, "client frame types with vectors: {client:?}");
    // 15 variants, less the two retired in v2 (never sent, so no vector).
    assert_eq!(server.len(), 13, "server frame types with vectors: {server:?}");
}

#[test]
fn the_largest_room_presence_frame_is_the_documented_bound() {
    let user = |i: usize| UserRef { id: u64::MAX - i as u64, username: "u".repeat(MAX_USERNAME_BYTES) };
    let frame = ServerFrame::RoomPresence(RoomPresence {
        room: "r".repeat(MAX_ROOM_NAME_BYTES),
        online: u32::MAX,
        users: (0..ROOM_PRESENCE_PAGE).map(user).collect(),
    });
    assert_eq!(encode(&frame).len(), MAX_ROOM_PRESENCE_FRAME);
    assert_eq!(MAX_ROOM_PRESENCE_FRAME, 2222, "PROTOCOL.md § 5 states this number");
}
