//! REST API, health endpoints and the served web client, over real HTTP.

mod support;

use serde_json::{Value, json};
use support::*;

async fn post(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    server.http.post(server.url(path)).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn registration_validates_and_refuses_duplicates() {
    let server = TestServer::start().await;
    let bad = post(&server, "/api/auth/register", json!({"username": "a", "email": "nope", "password": "short"})).await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    for field in ["username", "email", "password"] {
        assert!(body["fields"][field].is_string(), "message for {field}: {body}");
    }
    // A control character (U+0000 cannot even be stored on PostgreSQL) is no email address.
    for email in ["al\u{0}ice@example.com", "al\u{7}ice@example.com"] {
        let control = post(
            &server,
            "/api/auth/register",
            json!({"username": "ctrl", "email": email, "password": "correct horse"}),
        )
        .await;
        assert_eq!(control.status(), 400, "{email:?}");
        let body: Value = control.json().await.unwrap();
        assert!(body["fields"]["email"].is_string() && body["fields"].get("username").is_none(), "{body}");
    }
    let malformed = server.http.post(server.url("/api/auth/register")).body("{not json").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(malformed.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("JSON"));

    let ok = post(
        &server,
        "/api/auth/register",
        json!({"username": "alice", "email": "alice@example.com", "password": "correct horse"}),
    )
    .await;
    assert_eq!(ok.status(), 201);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
    assert_eq!(ok.json::<Value>().await.unwrap()["user"]["username"], "alice");

    let same_name = post(
        &server,
        "/api/auth/register",
        json!({"username": "ALICE", "email": "other@example.com", "password": "correct horse"}),
    )
    .await;
    assert_eq!(same_name.status(), 409);
    assert!(same_name.json::<Value>().await.unwrap()["fields"]["username"].is_string());
    let same_email = post(
        &server,
        "/api/auth/register",
        json!({"username": "alice2", "email": "Alice@Example.com", "password": "correct horse"}),
    )
    .await;
    assert_eq!(same_email.status(), 409);
    assert!(same_email.json::<Value>().await.unwrap()["fields"]["email"].is_string());
}

#[tokio::test]
async fn login_answers_one_401_for_every_failure() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let wrong_password =
        post(&server, "/api/auth/login", json!({"email": "alice@example.com", "password": "wrong password"})).await;
    let unknown =
        post(&server, "/api/auth/login", json!({"email": "nobody@example.com", "password": "correct horse battery"}))
            .await;
    assert_eq!((wrong_password.status().as_u16(), unknown.status().as_u16()), (401, 401));
    let (a, b): (Value, Value) = (wrong_password.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(a, b, "the same message whatever the cause");
    let ok =
        post(&server, "/api/auth/login", json!({"email": "ALICE@example.com", "password": "correct horse battery"}))
            .await;
    assert_eq!(ok.status(), 200);
    let token = token_from(&ok).unwrap();
    let me: Value = server.get("/api/auth/me", &token).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], "alice@example.com");
    assert!(me["user"].get("password_hash").is_none());
}

#[tokio::test]
async fn cross_origin_posts_are_refused() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/api/auth/login"))
        .header("origin", "http://evil.example")
        .json(&json!({"email": "a@example.com", "password": "whatever1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn api_needs_a_session_and_lists_channels_and_presence() {
    let server = TestServer::start().await;
    for path in ["/api/auth/me", "/api/channels", "/api/presence/online", "/api/channels/general/messages"] {
        assert_eq!(server.http.get(server.url(path)).send().await.unwrap().status(), 401, "{path}");
    }
    let token = server.register("alice").await;
    let channels: Value = server.get("/api/channels", &token).await.json().await.unwrap();
    let names: Vec<&str> =
        channels["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["general", "engineering", "design", "support"]);
    let online: Value = server.get("/api/presence/online", &token).await.json().await.unwrap();
    assert_eq!(online["users"], json!([]));
}

#[tokio::test]
async fn health_readiness_metrics_and_the_web_client() {
    let server = TestServer::start().await;
    let get = |path: &'static str| server.http.get(server.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("socketchat_connections_open 0"), "{metrics}");
    let index = get("/").await.unwrap();
    assert_eq!(index.status(), 200);
    let csp = index.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'self'"));
    let transport: Value = get("/api/transport").await.unwrap().json().await.unwrap();
    let wt = transport["webtransport"].as_str().expect("WebTransport offered");
    let wt_origin = wt.trim_end_matches("/wt");
    assert!(csp.contains(&format!("connect-src 'self' {wt_origin}")), "the page may open {wt_origin}: {csp}");
    let port = wt_origin.rsplit(':').next().unwrap();
    assert_eq!(index.headers()["alt-svc"].to_str().unwrap(), format!("h3=\":{port}\"; ma=86400"));
    assert_eq!(transport["websocket"], format!("ws://{}/ws", server.addr));
    assert!(index.text().await.unwrap().contains("src=\"/app.js\""));
    for asset in ["/app.js", "/socketchat.js", "/style.css"] {
        assert_eq!(get(asset).await.unwrap().status(), 200, "{asset}");
    }
    assert_eq!(get("/nope").await.unwrap().status(), 404);
    let ws_without_upgrade = get("/ws").await.unwrap();
    assert_eq!(ws_without_upgrade.status(), 400);
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_keeps_memory_bounded_and_a_full_hash_queue_answers_503_at_once() {
    let node = support::cluster::ProcessNode::start("auth", &[("SOCKETCHAT_AUTH_BURST", "100000".into())]);
    let http = reqwest::Client::new();
    register_at(&http, node.addr, "alice").await;
    let before = resident_kib(node.pid());
    let mut busy = 0;
    for round in 0..3 {
        // 50 at once, each a full argon2id check (19 MiB) of an unknown email.
        let attempts = (0..50).map(|i| {
            http.post(format!("http://{}/api/auth/login", node.addr))
                .json(&json!({"email": format!("nobody{round}-{i}@example.com"), "password": "wrong password"}))
                .send()
        });
        for response in futures_util::future::join_all(attempts).await {
            let response = response.unwrap();
            match response.status().as_u16() {
                401 => {}
                503 => {
                    assert_eq!(response.headers()["retry-after"], "1");
                    busy += 1;
                }
                other => panic!("unexpected {other}"),
            }
        }
    }
    let grown_mib = resident_kib(node.pid()).saturating_sub(before) / 1024;
    assert!(busy > 0, "2 threads and a queue of 16 cannot take 50 at once");
    assert!(grown_mib < 120, "the server grew by {grown_mib} MiB for 150 password checks");
    // A normal login still works at once afterwards.
    let ok = http
        .post(format!("http://{}/api/auth/login", node.addr))
        .json(&json!({"email": "alice@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn guesses_are_throttled_per_account_and_attempts_per_address() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| {
        c.auth_burst = 12;
        c.auth_per_minute = 1;
    })
    .await;
    server.register("alice").await;
    let guess = |password: &'static str| {
        post(&server, "/api/auth/login", json!({"email": "ALICE@example.com", "password": password}))
    };
    for _ in 0..5 {
        assert_eq!(guess("wrong guess").await.status(), 401);
    }
    let throttled = guess("wrong guess").await;
    assert_eq!(throttled.status(), 429, "the sixth guess within seconds");
    let wait: u64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "retry after {wait} s");
    assert_eq!(guess("correct horse battery").await.status(), 429, "whoever guesses, for now");
    // Another account is not affected; the address has used 1 + 7 of its 12 attempts.
    server.register("bob").await;
    let bob =
        post(&server, "/api/auth/login", json!({"email": "bob@example.com", "password": "correct horse battery"}));
    assert_eq!(bob.await.status(), 200);
    for _ in 0..2 {
        let r =
            post(&server, "/api/auth/login", json!({"email": "bob@example.com", "password": "correct horse battery"}));
        assert_eq!(r.await.status(), 200);
    }
    let over =
        post(&server, "/api/auth/login", json!({"email": "bob@example.com", "password": "correct horse battery"}));
    let over = over.await;
    assert_eq!(over.status(), 429, "the address is over its burst");
    assert!(over.headers().contains_key("retry-after"));
}

/// Reads until the server closes the socket; `Err` when it is still open after `wait`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, wait: std::time::Duration) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
            Err(_) => return Err("still open".into()),
        }
    }
}

#[tokio::test]
async fn idle_half_sent_and_kept_alive_connections_are_closed_in_time() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| c.header_timeout_ms = 300).await;
    let wait = std::time::Duration::from_secs(5);
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut kept = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    closed_within(&mut silent, wait).await.expect("a silent connection is closed");
    closed_within(&mut half, wait).await.expect("half-sent headers are closed");
    closed_within(&mut kept, wait).await.expect("an idle keep-alive connection is closed");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn one_address_cannot_take_every_socket_and_idle_connections_do_not_hold_shutdown() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| {
        c.max_sockets_per_address = 5;
        c.shutdown_grace_secs = 30;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        held.push(tcp);
    }
    let mut sixth = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    closed_within(&mut sixth, std::time::Duration::from_secs(5)).await.expect("the sixth is closed at once");
    drop(held.pop());
    // Once one is gone, the address may open another (the server counts the close first).
    let mut metrics = None;
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(server.url("/metrics")).await {
            metrics = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let metrics = metrics.expect("a freed share is given back");
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("socketchat_sockets_refused_total "))
        .and_then(|v| v.parse().ok())
        .expect("the counter is exported");
    assert!(refused >= 1, "the refused socket is counted: {refused}");
    // Four idle keep-alive connections stay open: shutdown does not wait the 30 s grace for them.
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    for mut tcp in held {
        closed_within(&mut tcp, std::time::Duration::from_secs(5)).await.expect("closed by the shutdown");
    }
}

/// An upgraded WebSocket is still a socket of its address: it counts against the address's
/// share for as long as it is open, not only until the upgrade (hyper ends the HTTP connection
/// once it hands the socket over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_websockets_count_against_their_addresses_share() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| c.max_sockets_per_address = 3).await;
    let token = server.register("alice").await;
    // A WebSocket that gets through, or `None` once the server closes the socket at once.
    let try_ws = || async {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ws", server.addr).into_client_request().unwrap();
        request.headers_mut().insert("cookie", format!("token={token}").parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tokio_tungstenite::client_async(request, tcp).await.ok().map(|(ws, _)| ws)
    };
    let mut open = Vec::new();
    while let Some(ws) = try_ws().await {
        open.push(ws);
        assert!(open.len() <= 3, "more WebSockets from one address than its share of 3");
    }
    // (The registration's keep-alive HTTP connection may hold one of the 3.)
    assert!(!open.is_empty(), "not even one WebSocket got through");
    drop(open.pop());
    // The server counts the closed WebSocket out as its task ends: retry until then.
    let deadline = tokio::time::Instant::now() + WAIT;
    while try_ws().await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the closed WebSocket's place never came back");
        tokio::task::yield_now().await;
    }
}

/// JSON bodies are small (registration, login, rooms): one over 16 KiB is refused with 413
/// before it is read whole.
#[tokio::test]
async fn a_json_body_over_16_kib_is_refused_with_413() {
    let server = TestServer::start().await;
    let body = json!({"username": "alice", "email": "alice@example.com", "password": "x".repeat(17 * 1024)});
    let response = server.http.post(server.url("/api/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 413);
    let small = json!({"username": "alice", "email": "alice@example.com", "password": "correct horse battery"});
    let response = server.http.post(server.url("/api/auth/register")).json(&small).send().await.unwrap();
    assert_eq!(response.status(), 201);
}

/// Behind a proxy that terminates TLS (HAProxy, listed in --trusted-proxies), `X-Forwarded-Proto:
/// https` makes the token cookie `Secure` and the advertised WebSocket URL `wss://`; from
/// anyone else the header changes nothing.
#[tokio::test]
async fn behind_a_trusted_tls_proxy_the_cookie_is_secure_and_the_websocket_url_wss() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let untrusted =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let cookie = |response: &reqwest::Response| {
        response.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    let register = |http: &reqwest::Client, name: &str, proto: &str| {
        http.post(server.url("/api/auth/register"))
            .header("x-forwarded-proto", proto)
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "correct horse"}))
            .send()
    };
    let secure = register(&server.http, "overtls", "https").await.unwrap();
    assert_eq!(secure.status(), 201);
    assert!(cookie(&secure).ends_with("; Secure"), "{}", cookie(&secure));
    let plain = register(&server.http, "plain", "http").await.unwrap();
    assert!(!cookie(&plain).contains("Secure"), "{}", cookie(&plain));
    let claimed = register(&untrusted, "claimed", "https").await.unwrap();
    assert_eq!(claimed.status(), 201);
    assert!(!cookie(&claimed).contains("Secure"), "not from a trusted proxy: {}", cookie(&claimed));

    let token = token_from(&secure).unwrap();
    let logout = server
        .http
        .post(server.url("/api/auth/logout"))
        .header("cookie", format!("token={token}"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert!(cookie(&logout).contains("Max-Age=0") && cookie(&logout).ends_with("; Secure"), "{}", cookie(&logout));

    let websocket = |http: &reqwest::Client, proto: &'static str| {
        let request = http.get(server.url("/api/transport")).header("x-forwarded-proto", proto).send();
        async move { request.await.unwrap().json::<Value>().await.unwrap()["websocket"].as_str().unwrap().to_owned() }
    };
    assert_eq!(websocket(&server.http, "https").await, format!("wss://{}/ws", server.addr));
    assert_eq!(websocket(&server.http, "http").await, format!("ws://{}/ws", server.addr));
    assert_eq!(websocket(&untrusted, "https").await, format!("ws://{}/ws", server.addr));
}

/// A client that sends its first frame in the same write as its upgrade request (before the
/// 101): the bytes the HTTP layer read past the request are the WebSocket's first input.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_read() {
    use socketchat::wire::{ClientFrame, Hello, PROTOCOL_VERSION, ServerFrame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let hello =
        socketchat::wire::encode(&ClientFrame::Hello(Hello { version: PROTOCOL_VERSION, client: "pipelined".into() }));
    assert!(hello.len() < 126);
    let mask = [0x1b, 0x2c, 0x3d, 0x4e];
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: token={token}\r\n\r\n",
        server.addr
    )
    .into_bytes();
    bytes.extend_from_slice(&[0x82, 0x80 | hello.len() as u8]);
    bytes.extend_from_slice(&mask);
    bytes.extend(hello.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&bytes).await.unwrap();
    // The 101, then whatever came after it.
    let mut head = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk)).await.expect("an answer").unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&chunk[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let rest = head.split_off(end);
    let mut ws = tokio_tungstenite::WebSocketStream::from_partially_read(
        tcp,
        rest,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let first =
        tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await.expect("a frame").unwrap().unwrap();
    let frame = socketchat::wire::decode::<ServerFrame>(&first.into_data(), 1 << 20).unwrap();
    assert!(matches!(frame, ServerFrame::Welcome(_)), "{frame:?}");
}
