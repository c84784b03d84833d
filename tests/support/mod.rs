//! Test harness: starts a real server (embedded default) on a free loopback port in a temp data
//! dir, and drives it with real HTTP and WebSocket clients. Everything stops when dropped.
//!
//! Two kinds of WebSocket client, both driven through [`Frames`]:
//! - a user: a `socketchat_client::Connection` (the client library a native app uses), from
//!   [`TestServer::connect_hello`]: what the tests of chat behaviour drive;
//! - [`Client`]: a bare WebSocket over the server's wire codec, for the tests of the wire
//!   itself (malformed frames, close codes, sockets that stop reading, chosen source
//!   addresses, Origin headers), which a well-behaved library never sends or shows.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod conformance;
pub mod postgres;
pub mod wt;

/// Frame pickers for `recv_until`: the frame of that kind, or `None` to keep reading.
pub mod pick {
    use socketchat::wire::*;

    pub fn ack(f: ServerFrame) -> Option<Ack> {
        if let ServerFrame::Ack(a) = f { Some(a) } else { None }
    }

    pub fn message(f: ServerFrame) -> Option<ChatMessage> {
        if let ServerFrame::Message(m) = f { Some(m) } else { None }
    }

    pub fn error(f: ServerFrame) -> Option<ErrorFrame> {
        if let ServerFrame::Error(e) = f { Some(e) } else { None }
    }

    pub fn joined(f: ServerFrame) -> Option<Joined> {
        if let ServerFrame::Joined(j) = f { Some(j) } else { None }
    }

    pub fn history(f: ServerFrame) -> Option<HistoryPage> {
        if let ServerFrame::History(p) = f { Some(p) } else { None }
    }

    pub fn typing(f: ServerFrame) -> Option<TypingEvent> {
        if let ServerFrame::Typing(t) = f { Some(t) } else { None }
    }

    pub fn room_presence(f: ServerFrame) -> Option<RoomPresence> {
        if let ServerFrame::RoomPresence(p) = f { Some(p) } else { None }
    }
}

use futures_util::{SinkExt, StreamExt};
use socketchat::config::Config;
use socketchat::server::{self, Running};
use socketchat::wire::{self, ClientFrame, ServerFrame, Welcome};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with(dir, |_| {}).await
    }

    /// Starts with settings changed by `tweak`.
    pub async fn start_with(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::embedded("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        // The tests register many users from one loopback address; the throttle has its own
        // tests (tests/http.rs), which lower this again.
        config.auth_burst = 10_000;
        tweak(&mut config);
        let running = server::start(config).await.expect("server starts");
        let addr = running.local_addr();
        Self { running: Some(running), addr, http: reqwest::Client::new(), dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A counter or gauge from the node's `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("socketchat_{name} "))).expect(name);
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Waits (polling `/metrics`, 5 s at most) until `pass` holds for a counter or gauge.
    pub async fn metric_until(&self, name: &str, pass: impl Fn(u64) -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let value = self.metric(name).await;
            if pass(value) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{name} stayed at {value}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops the server and hands back its data dir (for a restart on the same data).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        self.dir
    }

    /// Registers a user and returns its token (from the Set-Cookie header).
    pub async fn register(&self, username: &str) -> String {
        register_at(&self.http, self.addr, username).await
    }

    /// A request (`POST`, `DELETE`, …) with the token cookie and a JSON body: the status and
    /// the JSON answer (`Null` when there is none).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .http
            .request(method, self.url(path))
            .header("cookie", format!("token={token}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// GET with the token cookie.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.get(self.url(path)).header("cookie", format!("token={token}")).send().await.expect("GET")
    }

    pub async fn connect(&self, token: &str) -> Client {
        Client::connect(self.addr, Some(token), None).await.expect("upgrade accepted")
    }

    /// A user: a connection of the client library (Hello answered by Welcome).
    pub async fn connect_hello(&self, token: &str) -> (User, Welcome) {
        user_at(self.addr, token).await
    }

    /// Connects a bare WebSocket, says Hello, and reads Welcome (nothing else follows it).
    pub async fn connect_hello_raw(&self, token: &str) -> (Client, Welcome) {
        let mut client = self.connect(token).await;
        client.hello().await;
        let welcome = match client.recv().await {
            ServerFrame::Welcome(w) => w,
            other => panic!("expected Welcome, got {other:?}"),
        };
        (client, welcome)
    }
}

/// A connection of the client library, as the tests' ordinary users.
pub type User = socketchat_client::Connection;

/// A user connected to whatever answers at `addr` (a node, or HAProxy).
pub async fn user_at(addr: SocketAddr, token: &str) -> (User, Welcome) {
    let endpoint = socketchat_client::Endpoint::WebSocket { url: format!("ws://{addr}/ws") };
    let user = tokio::time::timeout(WAIT, User::open(&endpoint, token, "test"))
        .await
        .expect("Welcome within the wait")
        .expect("connected and greeted");
    let welcome = user.welcome().clone();
    (user, welcome)
}

/// What the tests do with a connection, a user's or a bare one. Every wait is bounded by
/// [`WAIT`]; a connection that closes or fails where a frame is expected fails the test.
#[allow(async_fn_in_trait)]
pub trait Frames {
    /// Sends a frame.
    async fn send(&mut self, frame: &ClientFrame);

    /// The next frame.
    async fn recv(&mut self) -> ServerFrame;

    /// The first frame `wanted` accepts; the others stay, in order, for `recv`.
    async fn next_where(&mut self, wanted: impl FnMut(&ServerFrame) -> bool) -> ServerFrame;

    /// Joins `room` and returns `Joined` with the replayed messages.
    async fn join_room(&mut self, room: &str, after_seq: Option<u64>) -> (wire::Joined, Vec<wire::ChatMessage>);

    /// Ends the connection and waits until the server has counted it out.
    async fn close(self);

    /// Next frame that `pick` accepts; others (presence, typing…) are skipped.
    async fn recv_until<T>(&mut self, mut pick: impl FnMut(ServerFrame) -> Option<T>) -> T {
        loop {
            if let Some(found) = pick(self.recv().await) {
                return found;
            }
        }
    }
}

impl Frames for User {
    async fn send(&mut self, frame: &ClientFrame) {
        self.send_frame(frame).await.expect("send");
    }

    async fn recv(&mut self) -> ServerFrame {
        tokio::time::timeout(WAIT, self.next_event()).await.expect("a frame within the wait").expect("connection open")
    }

    async fn next_where(&mut self, wanted: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
        tokio::time::timeout(WAIT, User::next_where(self, wanted))
            .await
            .expect("the frame within the wait")
            .expect("connection open")
    }

    async fn join_room(&mut self, room: &str, after_seq: Option<u64>) -> (wire::Joined, Vec<wire::ChatMessage>) {
        tokio::time::timeout(WAIT, self.join(room, after_seq))
            .await
            .expect("Joined within the wait")
            .unwrap_or_else(|e| panic!("join {room}: {e}"))
    }

    /// The library's close frame, then the server's reply, which it sends only after it has
    /// counted the connection out.
    async fn close(self) {
        let (mut tx, mut rx, _) = self.split();
        tx.close().await;
        let _ = tokio::time::timeout(WAIT, async { while rx.recv().await.is_ok() {} }).await;
    }
}

impl Frames for Client {
    async fn send(&mut self, frame: &ClientFrame) {
        Client::send(self, frame).await;
    }

    async fn recv(&mut self) -> ServerFrame {
        Client::recv(self).await
    }

    async fn next_where(&mut self, mut wanted: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
        if let Some(frame) = self.stash.iter().position(&mut wanted).and_then(|at| self.stash.remove(at)) {
            return frame;
        }
        let mut passed = Vec::new();
        let found = loop {
            let frame = self.recv().await;
            if wanted(&frame) {
                break frame;
            }
            passed.push(frame);
        };
        for (i, frame) in passed.into_iter().enumerate() {
            self.stash.insert(i, frame);
        }
        found
    }

    async fn join_room(&mut self, room: &str, after_seq: Option<u64>) -> (wire::Joined, Vec<wire::ChatMessage>) {
        Client::send(self, &join(room, after_seq)).await;
        let joined = self.recv_until(pick::joined).await;
        let mut replay = Vec::new();
        for _ in joined.replay_from..=joined.head_seq {
            replay.push(self.recv_until(pick::message).await);
        }
        (joined, replay)
    }

    async fn close(self) {
        Client::close(self).await;
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `GET` with the token cookie on whatever answers at `addr`, as JSON.
pub async fn get_json_at(addr: SocketAddr, path: &str, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .header("cookie", format!("token={token}"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON body")
}

/// The next `RoomPresence` of `room` as `(online, usernames)`.
pub async fn room_presence(client: &mut impl Frames, room: &str) -> (u32, Vec<String>) {
    client
        .recv_until(|f| match f {
            ServerFrame::RoomPresence(p) if p.room == room => {
                Some((p.online, p.users.iter().map(|u| u.username.clone()).collect()))
            }
            _ => None,
        })
        .await
}

/// Registers a user on whatever answers at `addr` (a node, or HAProxy) and returns its token.
pub async fn register_at(http: &reqwest::Client, addr: SocketAddr, username: &str) -> String {
    let response = http
        .post(format!("http://{addr}/api/auth/register"))
        .json(&serde_json::json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": "correct horse battery",
        }))
        .send()
        .await
        .expect("register request");
    assert_eq!(response.status(), 201, "register {username}");
    token_from(&response).expect("register sets the token cookie")
}

pub fn token_from(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("token="))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .filter(|v| !v.is_empty())
}

pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
    /// Messages `ack` read past (an `Ack` and the sender's own `Message` come in either
    /// order, PROTOCOL.md § 6.3): `recv` hands them out first.
    pub stash: std::collections::VecDeque<ServerFrame>,
}

impl Client {
    /// Opens `/ws` with an optional cookie token and Origin; an HTTP refusal comes back as its status.
    pub async fn connect(addr: SocketAddr, token: Option<&str>, origin: Option<&str>) -> Result<Self, u16> {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        if let Some(token) = token {
            request.headers_mut().insert("cookie", HeaderValue::from_str(&format!("token={token}")).unwrap());
        }
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        Self::connect_over(addr, request, TcpStream::connect(addr).await.expect("tcp connect")).await
    }

    /// Like `connect`, from a chosen loopback source address (HAProxy's `balance source` sends
    /// each source address to one node).
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr, token: &str) -> Result<Self, String> {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        request.headers_mut().insert("cookie", HeaderValue::from_str(&format!("token={token}")).unwrap());
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| e.to_string())?;
        let tcp = socket.connect(addr).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).unwrap();
        match tokio_tungstenite::client_async_with_config(request, tcp, None).await {
            Ok((ws, _)) => Ok(Self { ws, stash: Default::default() }),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Like `connect` with a tiny, fixed receive buffer (a client that stops reading fills
    /// the path quickly).
    pub async fn connect_small_buffer(addr: SocketAddr, token: &str) -> Self {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        request.headers_mut().insert("cookie", HeaderValue::from_str(&format!("token={token}")).unwrap());
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(8 * 1024).unwrap();
        let tcp = socket.connect(addr).await.expect("tcp connect");
        Self::connect_over(addr, request, tcp).await.expect("upgrade accepted")
    }

    async fn connect_over(
        _addr: SocketAddr,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
        tcp: TcpStream,
    ) -> Result<Self, u16> {
        tcp.set_nodelay(true).unwrap();
        let config = WebSocketConfig::default().max_message_size(Some(4 << 20)).max_frame_size(Some(4 << 20));
        match tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await {
            Ok((ws, _)) => Ok(Self { ws, stash: Default::default() }),
            Err(WsError::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("handshake failed: {e}"),
        }
    }

    pub async fn hello(&mut self) {
        self.send(&ClientFrame::Hello(wire::Hello { version: wire::PROTOCOL_VERSION, client: "test".into() })).await;
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_raw(wire::encode(frame)).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).await.expect("send");
    }

    /// Next frame; panics on timeout or close.
    pub async fn recv(&mut self) -> ServerFrame {
        if let Some(frame) = self.stash.pop_front() {
            return frame;
        }
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("connection open")
                .expect("no transport error");
            match message {
                Message::Binary(bytes) => {
                    return wire::decode(&bytes, usize::MAX).expect("server frames decode");
                }
                Message::Close(frame) => panic!("closed unexpectedly: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Closes from the client side and waits for the server's close reply, which the server
    /// sends only after it has counted the connection out.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }

    /// Reads until the server closes; returns the GoAway code (if any) and the close code.
    pub async fn expect_close(&mut self) -> (Option<u16>, Option<u16>) {
        let mut goaway = None;
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("close within the wait");
            match next {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Ok(ServerFrame::GoAway(g)) = wire::decode::<ServerFrame>(&bytes, usize::MAX) {
                        goaway = Some(g.code);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return (goaway, frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return (goaway, None),
            }
        }
    }
}

pub fn join(room: &str, after_seq: Option<u64>) -> ClientFrame {
    ClientFrame::Join(wire::Join { room: room.into(), after_seq })
}

/// A `Send` whose `client_msg_id` is `n` (big-endian, in its first 8 bytes): for loops of sends.
pub fn send_numbered(room: &str, n: u64, text: &str) -> ClientFrame {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    ClientFrame::Send(wire::Send { room: room.into(), client_msg_id: id, text: text.into(), attachments: Vec::new() })
}

pub fn send(room: &str, id: u8, text: &str) -> ClientFrame {
    ClientFrame::Send(wire::Send {
        room: room.into(),
        client_msg_id: [id; 16],
        text: text.into(),
        attachments: Vec::new(),
    })
}

/// Registers alice and bob, connects each (Hello answered) and joins both to `room`.
pub async fn alice_and_bob_in(server: &TestServer, room: &str) -> (User, User) {
    let (alice, bob) = (server.register("alice").await, server.register("bob").await);
    let (mut a, _) = server.connect_hello(&alice).await;
    let (mut b, _) = server.connect_hello(&bob).await;
    join_and_replay(&mut a, room, None).await;
    join_and_replay(&mut b, room, None).await;
    (a, b)
}

/// Joins and reads `Joined` plus the replayed messages.
pub async fn join_and_replay(
    client: &mut impl Frames,
    room: &str,
    after_seq: Option<u64>,
) -> (wire::Joined, Vec<wire::ChatMessage>) {
    client.join_room(room, after_seq).await
}

/// The next `Ack` (an `Error` instead fails the test); the frames that arrive before it stay
/// for `recv` (an `Ack` and the sender's own `Message` come in either order).
pub async fn ack(client: &mut impl Frames) -> wire::Ack {
    match client.next_where(|f| matches!(f, ServerFrame::Ack(_) | ServerFrame::Error(_))).await {
        ServerFrame::Ack(a) => a,
        other => panic!("expected an Ack, got {other:?}"),
    }
}

pub async fn message(client: &mut impl Frames) -> wire::ChatMessage {
    client.recv_until(pick::message).await
}
