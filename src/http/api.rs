//! REST handlers (README "HTTP API", PROTOCOL.md § 7–8).

use super::{ApiError, authenticate};
use crate::auth;
use crate::hub::{Event, EventKind, Topic};
use crate::node::Node;
use crate::presence::Scope;
use crate::store::StoreError;
use crate::tickets::Grant;
use crate::wire::UserRef;
use crate::wire::{MAX_HISTORY_PAGE, MessageKind};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;

type ApiResult = Result<Response, ApiError>;

fn user_json(id: u64, username: &str, email: &str) -> Value {
    json!({ "user": { "id": id, "username": username, "email": email } })
}

/// Parses a JSON body into `T`, answering 400 with the parser's reason.
pub(super) fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// A cookie-authenticated POST from a browser must come from an allowed origin (CSRF).
pub(super) fn check_origin(node: &Node, headers: &HeaderMap) -> Result<(), ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if auth::origin_allowed(origin, host, &node.allowed_origins) {
        Ok(())
    } else {
        tracing::warn!(origin = origin.unwrap_or(""), "cross-origin API request refused");
        Err(ApiError::new(StatusCode::FORBIDDEN, "origin not allowed"))
    }
}

/// Runs argon2 on the hashing pool (G6: a login flood neither takes every core nor grows
/// memory); a full queue is `503` with `Retry-After`.
async fn hashing<T: Send + 'static>(node: &Node, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    node.hasher.run(work).await.map_err(|e| {
        tracing::warn!(error = %e, "password check refused: queue full");
        ApiError::busy("too many logins in progress, retry shortly")
    })
}

/// Login and registration attempts per client address (`429` with `Retry-After` beyond).
fn throttle_address(node: &Node, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let Some(addr) = node.client_addr(Some(peer.ip()), forwarded) else {
        return Ok(());
    };
    node.auth_per_address.take(&addr, std::time::Instant::now()).map_err(|wait| {
        tracing::warn!(%addr, "login or registration attempts throttled");
        ApiError::too_many("too many attempts from this address, retry later", wait)
    })
}

/// Whether this request reached the service over HTTPS (see [`Node::forwarded_https`]).
fn https(node: &Node, peer: SocketAddr, headers: &HeaderMap) -> bool {
    node.forwarded_https(peer.ip(), headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()))
}

fn with_cookie(status: StatusCode, cookie: String, body: Value) -> Response {
    (status, [(header::SET_COOKIE, cookie)], Json(body)).into_response()
}

#[derive(Deserialize)]
pub(super) struct Register {
    username: String,
    email: String,
    password: String,
}

fn validate(r: &Register) -> Result<(), ApiError> {
    let mut err = ApiError::new(StatusCode::BAD_REQUEST, "validation failed");
    let name_ok = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if !(3..=crate::wire::MAX_USERNAME_BYTES).contains(&r.username.len()) || !r.username.chars().all(name_ok) {
        err = err.field("username", "3 to 32 characters: letters, digits, _ . -");
    }
    let email = r.email.trim();
    let valid_email = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if !valid_email {
        err = err.field("email", "a valid email address");
    }
    if !(8..=128).contains(&r.password.chars().count()) {
        err = err.field("password", "8 to 128 characters");
    }
    if err.fields.is_empty() { Ok(()) } else { Err(err) }
}

/// `POST /api/auth/register`.
pub(super) async fn register(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    check_origin(&node, &headers)?;
    throttle_address(&node, peer, &headers)?;
    let form: Register = parse(&body)?;
    validate(&form)?;
    let password = form.password.clone();
    let hash = hashing(&node, move || auth::hash_password(&password))
        .await?
        .map_err(|e| ApiError::unavailable(format!("hashing failed: {e}")))?;
    let user = match node.store.create_user(&form.username, form.email.trim(), &hash).await {
        Ok(user) => user,
        Err(StoreError::Conflict(field)) => {
            let what = if field == "email" { "email already registered" } else { "username already taken" };
            return Err(ApiError::new(StatusCode::CONFLICT, what).field(field, what));
        }
        Err(e) => return Err(ApiError::unavailable(e)),
    };
    tracing::info!(user = %user.username, id = user.id, "registered");
    let (token, _) = node.keys.issue(user.id, &user.username, crate::clock::unix_secs());
    let cookie = auth::session_cookie(&token, node.keys.ttl_secs(), https(&node, peer, &headers));
    Ok(with_cookie(StatusCode::CREATED, cookie, user_json(user.id, &user.username, &user.email)))
}

#[derive(Deserialize)]
pub(super) struct Login {
    email: String,
    password: String,
}

/// A valid hash of a random password: unknown emails are checked against it so that a failed
/// login takes as long whether or not the account exists.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| auth::hash_password(&hex::encode(rand::random::<[u8; 16]>())).unwrap_or_default())
}

/// `POST /api/auth/login`. Attempts are throttled per client address, and failed ones per
/// account: after 5 failures an account takes one guess per 10 s, whoever guesses.
pub(super) async fn login(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    check_origin(&node, &headers)?;
    throttle_address(&node, peer, &headers)?;
    let form: Login = parse(&body)?;
    let refused = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid email or password");
    if form.email.len() > 254 || form.password.len() > 1024 {
        return Err(refused());
    }
    let account = form.email.trim().to_lowercase();
    let now = std::time::Instant::now();
    node.failed_logins.check(&account, now).map_err(|wait| {
        tracing::warn!("login attempts for one account throttled");
        ApiError::too_many("too many failed logins for this account, retry later", wait)
    })?;
    let user = node.store.user_by_email(form.email.trim()).await.map_err(ApiError::unavailable)?;
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let password = form.password;
    let ok = hashing(&node, move || {
        let matched = auth::verify_password(&password, phc.as_deref().unwrap_or_else(|| decoy_hash()));
        matched && phc.is_some()
    })
    .await?;
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!("login refused");
        let _ = node.failed_logins.take(&account, std::time::Instant::now());
        return Err(refused());
    };
    let (token, _) = node.keys.issue(user.id, &user.username, crate::clock::unix_secs());
    let cookie = auth::session_cookie(&token, node.keys.ttl_secs(), https(&node, peer, &headers));
    Ok(with_cookie(StatusCode::OK, cookie, user_json(user.id, &user.username, &user.email)))
}

/// `POST /api/auth/logout`: revokes the token (when there is a valid one) and clears the cookie.
pub(super) async fn logout(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult {
    check_origin(&node, &headers)?;
    let claims = match authenticate(&node, &headers).await {
        Ok(claims) => Some(claims),
        // No valid token: nothing to revoke, and the cookie is cleared all the same.
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => None,
        // The store could not check the token: it may still be valid, and it is not cleared
        // as if it had been revoked (the client retries).
        Err(e) => return Err(e),
    };
    if let Some(claims) = claims {
        node.store.revoke_token(&claims.jti, claims.exp).await.map_err(ApiError::unavailable)?;
        // Close the connections that authenticated with this token, on every node.
        let revoke = Event {
            topic: Topic::Everyone,
            kind: EventKind::Revoke,
            from_user: claims.user_id().unwrap_or_default(),
            bytes: claims.jti.clone().into_bytes().into(),
        };
        node.broadcast(&revoke);
    }
    let cookie = auth::clearing_cookie(https(&node, peer, &headers));
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// `GET /api/auth/me`.
pub(super) async fn me(State(node): State<Arc<Node>>, headers: HeaderMap) -> ApiResult {
    let claims = authenticate(&node, &headers).await?;
    let user = node
        .store
        .user_by_id(claims.user_id().unwrap_or_default())
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "account no longer exists"))?;
    Ok(Json(user_json(user.id, &user.username, &user.email)).into_response())
}

/// `GET /api/channels/{name}/messages?before=SEQ&limit=N`: the newest page first (messages
/// ascending inside it), `next_before` for the next older page.
pub(super) async fn history(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let claims = authenticate(&node, &headers).await?;
    let room = node
        .visible_room(&name, claims.user_id().unwrap_or_default())
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such channel"))?;
    let number =
        |key: &'static str| -> Result<Option<u64>, ApiError> {
            query.get(key).map(|v| v.parse::<u64>()).transpose().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid query").field(key, "a non-negative integer")
            })
        };
    let before = number("before")?;
    let limit = number("limit")?.unwrap_or(50);
    if !(1..=u64::from(MAX_HISTORY_PAGE)).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid query").field("limit", "1 to 100"));
    }
    let page = node.store.page_before(room.id, before, limit as u32).await.map_err(ApiError::unavailable)?;
    let next_before = page.first().map(|m| m.seq).filter(|seq| *seq > 1);
    let messages: Vec<Value> = page
        .iter()
        .map(|m| {
            json!({
                "room": room.name,
                "seq": m.seq,
                "message_id": m.id,
                "sender": { "id": m.sender_id, "username": m.sender_name },
                "client_msg_id": hex::encode(m.client_msg_id),
                "sent_at_ms": m.sent_at_ms,
                "text": m.text,
                "kind": match m.kind {
                    MessageKind::Post => "post",
                    MessageKind::Edit => "edit",
                    MessageKind::Delete => "delete",
                },
                "target_seq": m.target_seq,
                "edited_at_ms": m.edited_at_ms,
                "deleted": m.deleted,
                "attachments": m.attachments,
            })
        })
        .collect();
    Ok(Json(json!({ "messages": messages, "next_before": next_before })).into_response())
}

/// Users per presence page over HTTP, at most and by default.
const PRESENCE_PAGE_MAX: usize = 100;
const PRESENCE_PAGE_DEFAULT: usize = 50;

/// One page of a presence scope, `?after=NAME&limit=N` (PROTOCOL.md § 7).
async fn presence_page(node: &Node, scope: Scope, query: &HashMap<String, String>) -> ApiResult {
    let limit = match query.get("limit") {
        None => PRESENCE_PAGE_DEFAULT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=PRESENCE_PAGE_MAX).contains(n))
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid query").field("limit", "1 to 100"))?,
    };
    let after = query.get("after").map(String::as_str);
    let page = node.presence.page(scope, after, limit).await.map_err(ApiError::unavailable)?;
    let next_after = if page.more { page.users.last().map(|u| u.username.clone()) } else { None };
    let users: Vec<Value> = page.users.iter().map(|u| json!({"id": u.id, "username": u.username})).collect();
    Ok(Json(json!({ "online": page.online, "users": users, "next_after": next_after })).into_response())
}

/// `GET /api/presence/online?after=NAME&limit=N`: everyone online, a page at a time.
pub(super) async fn online(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    authenticate(&node, &headers).await?;
    presence_page(&node, Scope::Online, &query).await
}

/// `GET /api/presence/rooms/{room}?after=NAME&limit=N`: who is online in a room.
pub(super) async fn room_online(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let claims = authenticate(&node, &headers).await?;
    let room = node
        .visible_room(&name, claims.user_id().unwrap_or_default())
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such channel"))?;
    presence_page(&node, Scope::Room(room.id), &query).await
}

/// `GET /api/presence/users?ids=1,2,3`: online state and last seen of up to 100 users.
pub(super) async fn user_status(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    authenticate(&node, &headers).await?;
    let invalid =
        || ApiError::new(StatusCode::BAD_REQUEST, "invalid query").field("ids", "1 to 100 user ids, comma-separated");
    let ids: Vec<u64> = query
        .get("ids")
        .ok_or_else(invalid)?
        .split(',')
        .map(|id| id.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| invalid())?;
    if !(1..=PRESENCE_PAGE_MAX).contains(&ids.len()) {
        return Err(invalid());
    }
    let status = node.presence.status(&ids).await.map_err(ApiError::unavailable)?;
    let users: Vec<Value> =
        status.iter().map(|s| json!({"id": s.id, "online": s.online, "last_seen_ms": s.last_seen_ms})).collect();
    Ok(Json(json!({ "users": users })).into_response())
}

/// `GET /api/transport`: where clients connect, and the certificate hash to pin for
/// WebTransport when the certificate is self-signed.
pub(super) async fn transport(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let host = super::request_host(&headers).unwrap_or("127.0.0.1");
    let http_host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or(host);
    let hashes: Vec<Value> = node
        .webtransport
        .as_ref()
        .and_then(|(certs, _)| certs.hash())
        .map(|hash| json!({ "algorithm": "sha-256", "value": BASE64.encode(hash) }))
        .into_iter()
        .collect();
    Json(json!({
        "websocket": format!("{}://{http_host}/ws", if https(&node, peer, &headers) { "wss" } else { "ws" }),
        "webtransport": super::webtransport_url(&node, &headers),
        "cert_hashes": hashes,
    }))
    .into_response()
}

/// `POST /api/auth/ticket`: a single-use ticket for a WebTransport CONNECT (browsers send no
/// cookies there), bound to this session's token and this Origin.
pub(super) async fn ticket(State(node): State<Arc<Node>>, headers: HeaderMap) -> ApiResult {
    check_origin(&node, &headers)?;
    let claims = authenticate(&node, &headers).await?;
    let grant = Grant {
        user: UserRef { id: claims.user_id().unwrap_or_default(), username: claims.name.clone() },
        token_id: claims.jti.clone(),
        token_expires_at: claims.exp,
        origin: headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned),
    };
    let ticket = node.tickets.issue(grant, std::time::Instant::now()).await.map_err(|e| {
        tracing::warn!(error = %e, "ticket refused");
        ApiError::busy("tickets unavailable, retry shortly")
    })?;
    Ok(Json(json!({ "ticket": ticket, "expires_in_ms": node.tickets.ttl().as_millis() as u64 })).into_response())
}

/// `GET /healthz`: the process answers.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: store and relay answer, and the node is not draining.
pub(super) async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if let Err(e) = node.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")).into_response();
    }
    if let Err(e) = node.bus.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("relay: {e}")).into_response();
    }
    (StatusCode::OK, "ready").into_response()
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics.render(node.hub.connections(), node.writer.counters(), node.bus.counters()),
    )
        .into_response()
}
