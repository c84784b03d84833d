//! HTTP/1.1 on the TCP listener: the REST API, health and metrics, the web client, and the
//! `/ws` upgrade. Every error is JSON `{"error": …, "fields"?: {…}}` with a fitting status.

mod api;
mod channels;
pub(crate) mod listener;
mod uploads;
mod web;

use crate::auth::{self, Claims};
use crate::node::Node;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest request body accepted (registration and login are tiny).
const MAX_BODY: usize = 16 * 1024;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    fields: BTreeMap<&'static str, String>,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status and a message.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), fields: BTreeMap::new(), retry_after: None }
    }

    /// `429 Too Many Requests` with `Retry-After` (whole seconds, at least 1).
    pub(crate) fn too_many(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, message);
        e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        e
    }

    /// `503 Service Unavailable` with `Retry-After: 1` (a queue is full).
    pub(crate) fn busy(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, message);
        e.retry_after = Some(1);
        e
    }

    /// Adds a per-field message.
    pub(crate) fn field(mut self, name: &'static str, message: impl Into<String>) -> Self {
        self.fields.insert(name, message.into());
        self
    }

    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// Whether any per-field message was added.
    pub(crate) fn has_fields(&self) -> bool {
        !self.fields.is_empty()
    }

    /// `503` with `Retry-After: 1`: the store (or Redis) failed; a retry may find it back.
    fn unavailable(e: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "request failed: backend unavailable");
        Self::busy("temporarily unavailable, retry shortly")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = if self.fields.is_empty() {
            json!({ "error": self.message })
        } else {
            json!({ "error": self.message, "fields": self.fields })
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Checks the `token` cookie: signature, algorithm, expiry, revocation.
pub(crate) async fn authenticate(node: &Node, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let token =
        auth::token_from_cookies(cookies).ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "not logged in"))?;
    let claims = node.keys.verify(token).map_err(|e| {
        tracing::info!(error = %e, "token refused");
        ApiError::new(StatusCode::UNAUTHORIZED, "session expired or invalid; log in again")
    })?;
    if node.store.is_revoked(&claims.jti).await.map_err(ApiError::unavailable)? {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "session expired or invalid; log in again"));
    }
    Ok(claims)
}

/// The host (without port) a request was addressed to.
pub(crate) fn request_host(headers: &HeaderMap) -> Option<&str> {
    host_name(headers.get(header::HOST)?)
}

/// A `Host` header's name, without the port.
fn host_name(host: &HeaderValue) -> Option<&str> {
    let host = host.to_str().ok()?;
    Some(match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host,
    })
}

/// The WebTransport URL for a request that reached us as `headers`' Host: same host name, the
/// UDP port.
pub(crate) fn webtransport_url(node: &Node, headers: &HeaderMap) -> Option<String> {
    webtransport_url_at(node, headers.get(header::HOST)?)
}

fn webtransport_url_at(node: &Node, host: &HeaderValue) -> Option<String> {
    let (_, port) = node.webtransport.as_ref()?;
    Some(format!("https://{}:{port}/wt", host_name(host)?))
}

async fn security_headers(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).cloned();
    let mut response = next.run(request).await;
    // An upgrade's `101` carries no document for these to govern: the WebSocket's bytes follow.
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let wt_origin =
        host.and_then(|host| webtransport_url_at(&node, &host)).map(|url| url.trim_end_matches("/wt").to_owned());
    let h = response.headers_mut();
    let connect = wt_origin.as_deref().map(|o| format!(" {o}")).unwrap_or_default();
    let csp = format!(
        "default-src 'self'; connect-src 'self'{connect}; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    );
    // A handler's own policy (a stricter one for uploaded files) stands.
    if let Ok(csp) = HeaderValue::from_str(&csp)
        && !h.contains_key(header::CONTENT_SECURITY_POLICY)
    {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    if let Some((_, port)) = &node.webtransport
        && let Ok(alt) = HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
    {
        h.insert(header::ALT_SVC, alt);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Every route of the TCP listener.
pub(crate) fn router(node: Arc<Node>) -> Router {
    Router::new()
        .merge(web::routes())
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/auth/register", post(api::register))
        .route("/api/auth/login", post(api::login))
        .route("/api/auth/logout", post(api::logout))
        .route("/api/auth/me", get(api::me))
        .route("/api/channels", get(channels::list).post(channels::create))
        .route("/api/channels/{name}/messages", get(api::history))
        .route("/api/channels/{name}/members", get(channels::members).post(channels::invite))
        .route("/api/channels/{name}/members/{username}", delete(channels::remove))
        .route("/api/channels/{name}/read", post(channels::read))
        .route("/api/dms", post(channels::direct))
        .route(
            "/api/uploads",
            post(uploads::create)
                .layer(DefaultBodyLimit::max(node.max_upload_bytes))
                .layer(axum::middleware::from_fn_with_state(node.clone(), uploads::limit_in_flight)),
        )
        .route("/api/uploads/{id}", get(uploads::download))
        .route("/api/presence/online", get(api::online))
        .route("/api/presence/rooms/{name}", get(api::room_online))
        .route("/api/presence/users", get(api::user_status))
        .route("/api/transport", get(api::transport))
        .route("/api/auth/ticket", post(api::ticket))
        .route("/ws", get(crate::transport::ws::upgrade))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(node.clone(), security_headers))
        .with_state(node)
}
