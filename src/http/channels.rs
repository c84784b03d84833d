//! Channels and direct conversations over HTTP: the room list with unread counts, creating
//! channels, members (invite, remove, leave), direct conversations, read marks
//! (PROTOCOL.md § 8). Every handler that names a room answers `404` for a room the user may
//! not see, exactly as for one that does not exist (G7).

use super::api::{check_origin, parse};
use super::{ApiError, authenticate};
use crate::node::Node;
use crate::store::{NewRoom, Role, Room, RoomKind, RoomListing, StoreError};
use crate::wire::{ReadState, RoomAdded, ServerFrame};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type ApiResult = Result<Response, ApiError>;

/// Longest channel name, in bytes.
pub(crate) const MAX_CHANNEL_NAME_BYTES: usize = 32;
/// Longest topic, in bytes.
pub(crate) const MAX_TOPIC_BYTES: usize = 200;

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such channel")
}

/// Whether `name` is a channel name: 2..=32 bytes of `a-z 0-9 - _`, starting with a letter or
/// digit (so it never collides with direct conversations, named `@…`).
pub(crate) fn valid_channel_name(name: &str) -> bool {
    (2..=MAX_CHANNEL_NAME_BYTES).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// The name of the one-to-one conversation of two users, the same from both sides.
pub(crate) fn direct_name(a: u64, b: u64) -> String {
    format!("@{}-{}", a.min(b), a.max(b))
}

/// The room `name` as the authenticated user may see it, or `404`.
async fn visible(node: &Node, name: &str, user_id: u64) -> Result<Arc<Room>, ApiError> {
    node.visible_room(name, user_id).await.map_err(ApiError::unavailable)?.ok_or_else(not_found)
}

async fn room_json(node: &Node, room: &Room, extra: Value) -> Result<Value, ApiError> {
    let mut out = json!({ "name": room.name, "topic": room.topic, "kind": room.kind.as_str() });
    if room.kind == RoomKind::Direct {
        let members = node.store.members(room.id).await.map_err(ApiError::unavailable)?;
        out["members"] = members.iter().map(|(id, username, _)| json!({ "id": id, "username": username })).collect();
    }
    if let (Value::Object(out), Value::Object(extra)) = (&mut out, extra) {
        out.extend(extra);
    }
    Ok(out)
}

fn listing_json(l: &RoomListing) -> Value {
    json!({
        "head_seq": l.head_seq,
        "last_read_seq": l.last_read_seq,
        "unread": l.unread,
        "role": l.role.map(Role::as_str),
    })
}

/// `GET /api/channels`: the rooms the user sees, with unread counts.
pub(super) async fn list(State(node): State<Arc<Node>>, headers: HeaderMap) -> ApiResult {
    let claims = authenticate(&node, &headers).await?;
    let listings = node.store.rooms_for(claims.user_id().unwrap_or_default()).await.map_err(ApiError::unavailable)?;
    let mut out = Vec::with_capacity(listings.len());
    for l in &listings {
        out.push(room_json(&node, &l.room, listing_json(l)).await?);
    }
    Ok(Json(json!({ "channels": out })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateChannel {
    name: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    private: bool,
}

fn creation_allowed(node: &Node, user_id: u64) -> Result<(), ApiError> {
    node.room_creations.take(&user_id, std::time::Instant::now()).map_err(|wait| {
        tracing::warn!(user = user_id, "room creation throttled");
        ApiError::too_many("too many channels created, retry later", wait)
    })
}

/// `POST /api/channels {name, topic, private}`: a new channel owned by the user.
pub(super) async fn create(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check_origin(&node, &headers)?;
    let claims = authenticate(&node, &headers).await?;
    let user_id = claims.user_id().unwrap_or_default();
    let req: CreateChannel = parse(&body)?;
    let mut invalid = ApiError::new(StatusCode::BAD_REQUEST, "invalid channel");
    if !valid_channel_name(&req.name) {
        invalid = invalid.field("name", "2 to 32 of a-z 0-9 - _, starting with a letter or digit");
    }
    if req.topic.len() > MAX_TOPIC_BYTES || req.topic.chars().any(char::is_control) {
        invalid = invalid.field("topic", "at most 200 bytes, no control characters");
    }
    if invalid.has_fields() {
        return Err(invalid);
    }
    creation_allowed(&node, user_id)?;
    let kind = if req.private { RoomKind::Private } else { RoomKind::Public };
    let new = NewRoom { name: req.name, topic: req.topic, kind, owner: Some(user_id), members: Vec::new() };
    let room = match node.store.create_room(new).await {
        Ok(room) => room,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "a channel with that name exists"));
        }
        Err(e) => return Err(ApiError::unavailable(e)),
    };
    tracing::info!(room = %room.name, kind = room.kind.as_str(), user = user_id, "channel created");
    let room = node.rooms.insert(room, |id| node.hub.wants(id));
    let body =
        room_json(&node, &room, json!({ "head_seq": 0, "last_read_seq": 0, "unread": 0, "role": "owner" })).await?;
    Ok((StatusCode::CREATED, Json(json!({ "channel": body }))).into_response())
}

/// `GET /api/channels/{name}/members`: who belongs to a room (its owner only, for a public
/// channel, which anyone may join).
pub(super) async fn members(State(node): State<Arc<Node>>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let claims = authenticate(&node, &headers).await?;
    let room = visible(&node, &name, claims.user_id().unwrap_or_default()).await?;
    let members = node.store.members(room.id).await.map_err(ApiError::unavailable)?;
    let members: Vec<Value> = members
        .iter()
        .map(|(id, username, role)| json!({ "id": id, "username": username, "role": role.as_str() }))
        .collect();
    Ok(Json(json!({ "members": members })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Invite {
    username: String,
}

/// A room's owner, or the answer for anyone else: `404` when they may not see it, `403` for
/// a member who is not its owner, `400` for rooms whose members are not managed.
async fn owned(node: &Node, name: &str, user_id: u64) -> Result<Arc<Room>, ApiError> {
    let room = visible(node, name, user_id).await?;
    match room.kind {
        RoomKind::Public => Err(ApiError::new(StatusCode::BAD_REQUEST, "public channels are open to everyone")),
        RoomKind::Direct => Err(ApiError::new(StatusCode::BAD_REQUEST, "a direct conversation keeps its members")),
        RoomKind::Private => match node.store.role(room.id, user_id).await.map_err(ApiError::unavailable)? {
            Some(Role::Owner) => Ok(room),
            Some(Role::Member) => Err(ApiError::new(StatusCode::FORBIDDEN, "only the channel's owner manages members")),
            None => Err(not_found()),
        },
    }
}

/// `POST /api/channels/{name}/members {username}`: the owner invites a user to a private
/// channel.
pub(super) async fn invite(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    check_origin(&node, &headers)?;
    let claims = authenticate(&node, &headers).await?;
    let req: Invite = parse(&body)?;
    let room = owned(&node, &name, claims.user_id().unwrap_or_default()).await?;
    let user = node
        .store
        .user_by_name(&req.username)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such user"))?;
    let added = node.store.add_member(room.id, user.id).await.map_err(ApiError::unavailable)?;
    tracing::info!(room = %room.name, member = %user.username, added, "member invited");
    let role = node.store.role(room.id, user.id).await.map_err(ApiError::unavailable)?.unwrap_or(Role::Member);
    if added {
        node.tell_user(user.id, &ServerFrame::RoomAdded(RoomAdded { room: room.name.clone() }));
    }
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "member": { "id": user.id, "username": user.username, "role": role.as_str() } })))
        .into_response())
}

/// `DELETE /api/channels/{name}/members/{username}`: the owner removes a member, or a member
/// leaves (removes themself). Their connections joined to the room leave it at once, on
/// every node.
pub(super) async fn remove(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path((name, username)): Path<(String, String)>,
) -> ApiResult {
    check_origin(&node, &headers)?;
    let claims = authenticate(&node, &headers).await?;
    let user_id = claims.user_id().unwrap_or_default();
    let target = node.store.user_by_name(&username).await.map_err(ApiError::unavailable)?;
    let room = match &target {
        Some(t) if t.id == user_id => {
            let room = visible(&node, &name, user_id).await?;
            if room.kind == RoomKind::Public {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "public channels are open to everyone"));
            }
            if node.store.role(room.id, user_id).await.map_err(ApiError::unavailable)? == Some(Role::Owner) {
                return Err(ApiError::new(StatusCode::CONFLICT, "the owner cannot leave the channel"));
            }
            room
        }
        _ => owned(&node, &name, user_id).await?,
    };
    let target = target.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such member"))?;
    if !node.store.remove_member(room.id, target.id).await.map_err(ApiError::unavailable)? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such member"));
    }
    // After the commit: a join that checked membership before it sees this eviction.
    node.evict(room.id, target.id);
    tracing::info!(room = %room.name, member = %target.username, "member removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Conversation {
    usernames: Vec<String>,
}

/// `POST /api/dms {usernames}`: the one-to-one conversation with one user (found again by
/// either side: `200`, or `201` when new), or a new group conversation with several.
pub(super) async fn direct(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check_origin(&node, &headers)?;
    let claims = authenticate(&node, &headers).await?;
    let me = claims.user_id().unwrap_or_default();
    let req: Conversation = parse(&body)?;
    let max_others = node.max_dm_members - 1;
    // The same name twice (in any case) is one member.
    let mut usernames: Vec<String> = Vec::with_capacity(req.usernames.len());
    for name in req.usernames {
        if !usernames.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            usernames.push(name);
        }
    }
    if usernames.is_empty() || usernames.len() > max_others {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid conversation")
            .field("usernames", format!("1 to {max_others} other users")));
    }
    let mut others = Vec::with_capacity(usernames.len());
    for name in &usernames {
        let user = node.store.user_by_name(name).await.map_err(ApiError::unavailable)?;
        match user {
            Some(u) if u.id == me => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid conversation")
                    .field("usernames", "other users than yourself"));
            }
            Some(u) if !others.contains(&u.id) => others.push(u.id),
            Some(_) => {}
            None => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no such user: {name}"))),
        }
    }
    let (name, created) = if let [other] = others[..] {
        let name = direct_name(me, other);
        if node.store.room_by_name(&name).await.map_err(ApiError::unavailable)?.is_none() {
            // Only a new conversation counts toward the creation limit.
            creation_allowed(&node, me)?;
        }
        let new = NewRoom {
            name: name.clone(),
            topic: String::new(),
            kind: RoomKind::Direct,
            owner: None,
            members: vec![me, other],
        };
        match node.store.create_room(new).await {
            Ok(room) => (room.name, true),
            // Made before, from either side (or at this moment by the other): found again,
            // with whoever had left it back in.
            Err(StoreError::Conflict(_)) => {
                let room =
                    node.store.room_by_name(&name).await.map_err(ApiError::unavailable)?.ok_or_else(not_found)?;
                for user in [me, other] {
                    if node.store.add_member(room.id, user).await.map_err(ApiError::unavailable)? && user != me {
                        node.tell_user(user, &ServerFrame::RoomAdded(RoomAdded { room: name.clone() }));
                    }
                }
                (name, false)
            }
            Err(e) => return Err(ApiError::unavailable(e)),
        }
    } else {
        creation_allowed(&node, me)?;
        let name = format!("@g-{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut members = vec![me];
        members.extend(&others);
        let new = NewRoom { name, topic: String::new(), kind: RoomKind::Direct, owner: None, members };
        (node.store.create_room(new).await.map_err(ApiError::unavailable)?.name, true)
    };
    if created {
        for other in &others {
            node.tell_user(*other, &ServerFrame::RoomAdded(RoomAdded { room: name.clone() }));
        }
    }
    // The user's own listing of it: the same shape as in the room list.
    let listings = node.store.rooms_for(me).await.map_err(ApiError::unavailable)?;
    let listing = listings.iter().find(|l| l.room.name == name).ok_or_else(not_found)?;
    let body = room_json(&node, &listing.room, listing_json(listing)).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "channel": body }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MarkRead {
    seq: u64,
}

/// `POST /api/channels/{name}/read {seq}`: moves the user's read mark up (never down).
pub(super) async fn read(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    check_origin(&node, &headers)?;
    let claims = authenticate(&node, &headers).await?;
    let user_id = claims.user_id().unwrap_or_default();
    let req: MarkRead = parse(&body)?;
    node.read_marks.take(&user_id, std::time::Instant::now()).map_err(|wait| {
        tracing::warn!(user = user_id, "read marks throttled");
        ApiError::too_many("too many read marks, retry later", wait)
    })?;
    let room = visible(&node, &name, user_id).await?;
    let mark = node.store.mark_read(user_id, room.id, req.seq).await.map_err(ApiError::unavailable)?;
    node.tell_user(user_id, &ServerFrame::ReadState(ReadState { room: room.name.clone(), last_read_seq: mark }));
    Ok(Json(json!({ "last_read_seq": mark })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for good in ["ab", "general", "team-7", "a_b", "0day", "abcdefghijklmnopqrstuvwxyz012345"] {
            assert!(valid_channel_name(good), "{good}");
        }
        for bad in ["", "a", "-ab", "_ab", "Ab", "a b", "@1-2", "é1", "abcdefghijklmnopqrstuvwxyz0123456", "a/b"] {
            assert!(!valid_channel_name(bad), "{bad}");
        }
    }

    #[test]
    fn direct_names_are_the_same_from_both_sides() {
        assert_eq!(direct_name(7, 3), "@3-7");
        assert_eq!(direct_name(3, 7), "@3-7");
        assert!(!valid_channel_name(&direct_name(1, 2)));
    }
}
