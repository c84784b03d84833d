//! HTTP before any frame (PROTOCOL.md § 1.1, § 1.4): an account's token and where to connect.

use crate::link::Endpoint;
use crate::{ClientError, ClientResult};
use base64::Engine;
use serde_json::{Value, json};

/// A logged-in user: the server's base URL and the token its cookie carries.
#[derive(Clone)]
pub struct Account {
    /// `http://host:port` of the server (or its load balancer).
    pub base: String,
    /// The JWT of the `token` cookie.
    pub token: String,
    /// User id.
    pub id: u64,
    /// Username.
    pub username: String,
    http: reqwest::Client,
}

/// Without the token: a `{:?}` in an application's log must not hand out the account.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("base", &self.base)
            .field("id", &self.id)
            .field("username", &self.username)
            .finish()
    }
}

fn http_error(e: reqwest::Error) -> ClientError {
    ClientError::Http(e.to_string())
}

impl Account {
    /// Registers a new user (`POST /api/auth/register`) and keeps its token.
    pub async fn register(base: &str, username: &str, email: &str, password: &str) -> ClientResult<Self> {
        let body = json!({"username": username, "email": email, "password": password});
        Self::authenticate(base, "/api/auth/register", body).await
    }

    /// Logs in (`POST /api/auth/login`) and keeps the token.
    pub async fn login(base: &str, email: &str, password: &str) -> ClientResult<Self> {
        Self::authenticate(base, "/api/auth/login", json!({"email": email, "password": password})).await
    }

    /// An account from a token kept from before.
    pub fn from_token(base: &str, token: &str, id: u64, username: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            id,
            username: username.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn authenticate(base: &str, path: &str, body: Value) -> ClientResult<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let response = http.post(format!("{base}{path}")).json(&body).send().await.map_err(http_error)?;
        let status = response.status();
        let token = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("token=").map(|rest| rest.split(';').next().unwrap_or("").to_owned()));
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match (status.is_success(), token) {
            (true, Some(token)) => Ok(Self {
                base,
                token,
                id: body["user"]["id"].as_u64().unwrap_or(0),
                username: body["user"]["username"].as_str().unwrap_or("").to_owned(),
                http,
            }),
            _ => Err(ClientError::Http(format!("{status}: {}", body["error"].as_str().unwrap_or("no token")))),
        }
    }

    /// GET with the cookie; the JSON answer.
    pub async fn get(&self, path: &str) -> ClientResult<Value> {
        self.call(reqwest::Method::GET, path).await
    }

    /// A request with the cookie and no body; the JSON answer of a success, or the status and
    /// body of a failure as [`ClientError::Http`].
    async fn call(&self, method: reqwest::Method, path: &str) -> ClientResult<Value> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, format!("token={}", self.token))
            .send()
            .await
            .map_err(http_error)?;
        let status = response.status();
        let body: Value = response.json().await.map_err(http_error)?;
        if status.is_success() { Ok(body) } else { Err(ClientError::Http(format!("{status}: {body}"))) }
    }

    /// A single-use ticket for one WebTransport CONNECT (`POST /api/auth/ticket`, PROTOCOL.md
    /// § 1.4): it works once, within its lifetime (30 s by default), for this account, from a
    /// client that sends no `Origin` — as this library does not.
    pub async fn ticket(&self) -> ClientResult<String> {
        let body = self.call(reqwest::Method::POST, "/api/auth/ticket").await?;
        body["ticket"].as_str().map(str::to_owned).ok_or_else(|| ClientError::Http(format!("no ticket in {body}")))
    }

    /// Where to connect over WebSocket (`GET /api/transport`).
    pub async fn websocket(&self) -> ClientResult<Endpoint> {
        let info = self.get("/api/transport").await?;
        let url = info["websocket"].as_str().ok_or_else(|| ClientError::Http("no websocket URL".into()))?;
        Ok(Endpoint::WebSocket { url: url.to_owned() })
    }

    /// Where to connect over WebTransport, with the certificate hash to pin when the server's
    /// certificate is self-signed; `None` when the server offers no WebTransport.
    pub async fn webtransport(&self) -> ClientResult<Option<Endpoint>> {
        let info = self.get("/api/transport").await?;
        let Some(url) = info["webtransport"].as_str() else {
            return Ok(None);
        };
        let cert_hash = match info["cert_hashes"][0]["value"].as_str() {
            Some(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| ClientError::Http(format!("certificate hash: {e}")))?;
                Some(<[u8; 32]>::try_from(bytes).map_err(|_| ClientError::Http("certificate hash length".into()))?)
            }
            None => None,
        };
        Ok(Some(Endpoint::WebTransport { url: url.to_owned(), cert_hash }))
    }
}
