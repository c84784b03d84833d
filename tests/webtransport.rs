//! WebTransport over HTTP/3 against the real server, with a client nobody here wrote
//! (wtransport, on quinn) that pins the published certificate hash as browsers do.

mod support;

use socketchat::wire::{self, CloseCode, ServerFrame};
use std::time::Duration;
use support::wt::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_client_authenticates_with_its_cookie_and_chats_with_a_websocket_user() {
    let server = TestServer::start().await;
    let (ta, tb) = (server.register("alice").await, server.register("bob").await);
    let mut wt = wt_connect(&server, "", &[cookie(&ta)]).await.expect("session accepted");
    assert_eq!(wt.hello().await.user.username, "alice");
    let (mut ws, _) = server.connect_hello(&tb).await;
    wt.send(&join("general", None)).await;
    wt.recv_until(|f| matches!(f, ServerFrame::Joined(_)).then_some(())).await;
    join_and_replay(&mut ws, "general", None).await;

    wt.send(&send("general", 1, "over QUIC")).await;
    // The Ack and the sender's own Message come in either order (PROTOCOL.md § 6.3).
    let mut on_wt = Vec::new();
    let acked = loop {
        match wt.next().await.unwrap() {
            ServerFrame::Ack(a) => break a,
            ServerFrame::Message(m) => on_wt.push((m.seq, m.text)),
            _ => {}
        }
    };
    ws.send(&send("general", 2, "over TCP")).await;
    let mut on_ws = Vec::new();
    let mut ws_acked = false;
    while !ws_acked || on_ws.len() < 2 {
        match ws.recv().await {
            ServerFrame::Ack(_) => ws_acked = true,
            ServerFrame::Message(m) => on_ws.push((m.seq, m.text)),
            _ => {}
        }
    }
    while on_wt.len() < 2 {
        if let ServerFrame::Message(m) = wt.next().await.unwrap() {
            on_wt.push((m.seq, m.text));
        }
    }
    assert_eq!(on_wt, on_ws, "both transports see the same messages in the same order");
    assert_eq!(on_wt[0], (acked.seq, "over QUIC".to_owned()));

    // The same idempotency over either transport: alice retries her QUIC send over WebSocket.
    let (mut alice_ws, _) = server.connect_hello(&ta).await;
    join_and_replay(&mut alice_ws, "general", Some(2)).await;
    alice_ws.send(&send("general", 1, "over QUIC")).await;
    assert_eq!(ack(&mut alice_ws).await, acked, "the identical ack");
}

/// A page served through a proxy on the default port buys its ticket there (its Origin passes
/// against the Host it was served from) and connects with it: the ticket's Origin is the page's,
/// not this node's address. A cookie CONNECT from that Origin is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_behind_a_proxy_connects_with_the_ticket_it_bought() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let page = "https://chat.example.com";
    let bought = server
        .http
        .post(server.url("/api/auth/ticket"))
        .header("cookie", format!("token={token}"))
        .header("host", "chat.example.com")
        .header("origin", page)
        .send()
        .await
        .unwrap();
    assert_eq!(bought.status(), 200);
    let t = bought.json::<serde_json::Value>().await.unwrap()["ticket"].as_str().unwrap().to_owned();
    let mut wt =
        wt_connect(&server, &format!("?ticket={t}"), &[("origin", page.into())]).await.expect("the page's ticket");
    assert_eq!(wt.hello().await.user.username, "alice");
    let by_cookie = wt_connect(&server, "", &[cookie(&token), ("origin", page.into())]).await;
    assert!(by_cookie.is_err(), "a cookie from another origin than this node's own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_works_once_from_its_origin_and_resume_works_over_webtransport() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let origin = format!("http://{}", server.addr);
    let t = ticket(&server, &token, Some(&origin)).await;
    let mut wt =
        wt_connect(&server, &format!("?ticket={t}"), &[("origin", origin.clone())]).await.expect("ticket accepted");
    assert_eq!(wt.hello().await.user.username, "alice");
    wt.send(&join("general", None)).await;
    wt.recv_until(|f| matches!(f, ServerFrame::Joined(_)).then_some(())).await;
    for i in 1..=3u8 {
        wt.send(&send("general", i, &format!("m{i}"))).await;
        wt.recv_until(|f| matches!(f, ServerFrame::Ack(_)).then_some(())).await;
    }
    drop(wt);

    let reuse = wt_connect(&server, &format!("?ticket={t}"), &[("origin", origin.clone())]).await;
    assert!(reuse.is_err(), "a ticket works once");

    let other_origin = ticket(&server, &token, Some(&origin)).await;
    let foreign =
        wt_connect(&server, &format!("?ticket={other_origin}"), &[("origin", "http://evil.example".into())]).await;
    assert!(foreign.is_err(), "a ticket is bound to its origin (and a foreign origin is refused)");
    let native = ticket(&server, &token, None).await;
    let from_browser = wt_connect(&server, &format!("?ticket={native}"), &[("origin", origin.clone())]).await;
    assert!(from_browser.is_err(), "a ticket bought without an Origin is refused from a browser's Origin");

    let fresh = ticket(&server, &token, Some(&origin)).await;
    let mut wt = wt_connect(&server, &format!("?ticket={fresh}"), &[("origin", origin)]).await.expect("fresh ticket");
    wt.hello().await;
    wt.send(&join("general", Some(1))).await;
    let joined = wt.recv_until(pick::joined).await;
    assert_eq!((joined.replay_from, joined.head_seq), (2, 3));
    let replay: Vec<u64> = vec![
        wt.recv_until(|f| match f {
            ServerFrame::Message(m) => Some(m.seq),
            _ => None,
        })
        .await,
        wt.recv_until(|f| match f {
            ServerFrame::Message(m) => Some(m.seq),
            _ => None,
        })
        .await,
    ];
    assert_eq!(replay, [2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_without_valid_credentials_are_refused_before_they_exist() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |c| c.ticket_ttl_ms = 200).await;
    let token = server.register("alice").await;
    assert!(wt_connect(&server, "", &[]).await.is_err(), "no credentials");
    assert!(wt_connect(&server, "", &[cookie("not.a.token")]).await.is_err(), "bad token");
    assert!(wt_connect(&server, "?ticket=00ff", &[]).await.is_err(), "made-up ticket");
    let own = format!("http://{}", server.addr);
    assert!(
        wt_connect(&server, "", &[cookie(&token), ("origin", "http://evil.example".into())]).await.is_err(),
        "foreign origin"
    );
    assert!(wt_connect(&server, "", &[cookie(&token), ("origin", own.clone())]).await.is_ok(), "own origin");
    let expired = ticket(&server, &token, Some(&own)).await;
    // The ticket lives 200 ms in this server; the test is about time passing.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(wt_connect(&server, &format!("?ticket={expired}"), &[("origin", own)]).await.is_err(), "expired ticket");
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("socketchat_upgrades_refused_total 5"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_or_oversized_stream_data_closes_only_that_session() {
    let server = TestServer::start().await;
    let (ta, tb) = (server.register("alice").await, server.register("bob").await);
    let mut good = wt_connect(&server, "", &[cookie(&tb)]).await.unwrap();
    good.hello().await;
    good.send(&join("general", None)).await;
    good.recv_until(|f| matches!(f, ServerFrame::Joined(_)).then_some(())).await;

    let mut oversized = wt_connect(&server, "", &[cookie(&ta)]).await.unwrap();
    oversized.hello().await;
    oversized.send_raw(&wire::encode_stream_frame(&vec![4u8; 100_000])[..8]).await;
    assert_eq!(oversized.goaway().await, Some(CloseCode::FrameTooLarge.code()));

    let mut garbled = wt_connect(&server, "", &[cookie(&ta)]).await.unwrap();
    garbled.hello().await;
    garbled.send_raw(&[3, 0xff, 0x13, 0x37]).await;
    assert_eq!(garbled.goaway().await, Some(CloseCode::BadFrame.code()));

    let mut bad_prefix = wt_connect(&server, "", &[cookie(&ta)]).await.unwrap();
    bad_prefix.send_raw(&[0xff; 6]).await;
    assert_eq!(bad_prefix.goaway().await, Some(CloseCode::BadFrame.code()));

    good.send(&send("general", 9, "unharmed")).await;
    let m = good.recv_until(pick::message).await;
    assert_eq!(m.text, "unharmed");
}

/// Interop: Python's aioquic (an HTTP/3 stack nobody here wrote) opens a session, joins, sends
/// and receives; a WebSocket member of the room sees the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aioquic_client_chats_over_webtransport() {
    let server = TestServer::start().await;
    let (ta, tb) = (server.register("alice").await, server.register("bob").await);
    let (mut ws, _) = server.connect_hello(&tb).await;
    join_and_replay(&mut ws, "general", None).await;
    let (url, _) = transport_info(&server).await;
    let ca = server.dir.path().join("certs").join("wt-cert.pem");
    let run = |args: Vec<String>| {
        // scripts/test points this at a venv with aioquic.
        tokio::process::Command::new(std::env::var("SOCKETCHAT_PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg("tests/interop/aioquic_client.py")
            .args(args)
            .kill_on_drop(true)
            .output()
    };
    let output = run(vec![
        "--url".into(),
        url.clone(),
        "--cookie".into(),
        format!("token={ta}"),
        "--ca-cert".into(),
        ca.display().to_string(),
        "--room".into(),
        "general".into(),
    ])
    .await
    .expect("python3 runs (scripts/test installs aioquic)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_else(|_| {
        panic!("one JSON line; stdout: {stdout}; stderr: {}", String::from_utf8_lossy(&output.stderr))
    });
    assert_eq!(report["ok"], true, "aioquic: {report}; stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success());
    let seen = message(&mut ws).await;
    assert_eq!((seen.seq, seen.message_id), (report["seq"].as_u64().unwrap(), report["message_id"].as_u64().unwrap()));
    assert_eq!((seen.sender.username.as_str(), seen.text.as_str()), ("alice", "from aioquic"));

    // Refusals are answered on the CONNECT stream with their status, before any session.
    let ca = ca.display().to_string();
    let refused =
        run(vec!["--url".into(), url.clone(), "--cookie".into(), "token=bad".into(), "--ca-cert".into(), ca.clone()])
            .await
            .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("answered 401"),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let foreign = run(vec![
        "--url".into(),
        url,
        "--cookie".into(),
        format!("token={ta}"),
        "--origin".into(),
        "http://evil.example".into(),
        "--ca-cert".into(),
        ca,
    ])
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&foreign.stdout).contains("answered 403"),
        "{}",
        String::from_utf8_lossy(&foreign.stdout)
    );
}

/// A client's SETTINGS and its CONNECT travel on two QUIC streams, in no set order; under load
/// the server read the CONNECT first and closed the connection ("webtransport is not supported
/// by client"). The server now waits for the SETTINGS, and the session then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_arrives_before_the_clients_settings_waits_for_them() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let client = raw::RawH3::connect(&server).await;
    let (_connect_send, mut connect_recv) = client.send_connect(&token).await;
    // The server reads the CONNECT within a millisecond or two here; it must not give up on the
    // connection for want of SETTINGS that are still to come.
    let closed = tokio::time::timeout(Duration::from_millis(500), client.conn.closed()).await;
    assert!(closed.is_err(), "the connection was closed before the client sent its SETTINGS: {closed:?}");
    let _control = client.send_settings(&raw::WEBTRANSPORT_SETTINGS).await;
    raw::expect_ok_response(&mut connect_recv).await;
    let (mut send, mut recv) = client.open_session_stream(0).await;
    match raw::hello(&mut send, &mut recv).await {
        ServerFrame::Welcome(welcome) => assert_eq!(welcome.user.username, "alice"),
        other => panic!("expected Welcome, got {other:?}"),
    }

    // SETTINGS that arrive without WebTransport, after the CONNECT: H3_SETTINGS_ERROR.
    let client = raw::RawH3::connect(&server).await;
    let _connect = client.send_connect(&token).await;
    let _control = client.send_settings(&[(0x08, 1), (0x33, 1)]).await;
    let closed = tokio::time::timeout(WAIT, client.conn.closed()).await.expect("closed within the wait");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(close.error_code, 0x109u32.into()),
        other => panic!("expected H3_SETTINGS_ERROR, got {other:?}"),
    }
}

/// The TCP listener's `Alt-Svc` names the HTTP/3 listener for the whole origin, but it serves
/// only the WebTransport session: any other request is answered `421`, which tells a client
/// that followed `Alt-Svc` to drop the alternative and retry over TCP (RFC 7838 § 6), and so
/// is each further request on that connection (a browser sends a page's requests side by
/// side). A WebTransport CONNECT to another path is `404`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_on_the_http3_listener_are_sent_back_to_tcp() {
    let server = TestServer::start().await;
    // QPACK static table (RFC 9204 Appendix A): entry 69 is `:status 421`, entry 27 `:status 404`.
    let misdirected: &[u8] = &[0xff, 69 - 63];
    let client = raw::RawH3::connect(&server).await;
    let requests = [("GET", "/"), ("POST", "/api/auth/login"), ("GET", "/ws"), ("GET", "/app.js")];
    let mut streams = Vec::new();
    for (method, path) in requests {
        streams.push(client.send_request(&[(":method", method), (":path", path)]).await);
    }
    for ((method, path), (_send, mut recv)) in requests.into_iter().zip(streams) {
        let head = raw::response_head(&mut recv).await;
        assert_eq!(head.get(2..4), Some(misdirected), "{method} {path}: a 421; HEADERS block {head:02x?}");
    }
    // A request whose headers never end does not hold the connection open: it is closed once
    // nothing whole has come for a while (the server's keep-alives would hold it forever).
    let (mut silent, _recv) = client.conn.open_bi().await.unwrap();
    silent.write_all(&[0x01, 0x40, 0xff]).await.unwrap(); // HEADERS, 255 bytes announced, none sent
    tokio::time::timeout(WAIT, client.conn.closed()).await.expect("the connection closed within the wait");

    let client = raw::RawH3::connect(&server).await;
    let _control = client.send_settings(&raw::WEBTRANSPORT_SETTINGS).await;
    let (_send, mut recv) =
        client.send_request(&[(":method", "CONNECT"), (":protocol", "webtransport"), (":path", "/elsewhere")]).await;
    let head = raw::response_head(&mut recv).await;
    assert_eq!(head.get(2), Some(&(0xc0 | 27)), "a 404; HEADERS block {head:02x?}");
}

/// A client that keeps sending requests to the HTTP/3 listener gets 32 answers on one QUIC
/// connection, then the connection is closed: it cannot hold the connection (and its place)
/// by sending one request after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_other_requests_on_one_http3_connection_ends_with_the_connection() {
    let server = TestServer::start().await;
    let misdirected: &[u8] = &[0xff, 69 - 63];
    let client = raw::RawH3::connect(&server).await;
    for i in 0..32 {
        let (mut send, mut recv) = client.send_request(&[(":method", "GET"), (":path", "/")]).await;
        // A stream both sides finished gives its credit back: the next one can open.
        send.finish().unwrap();
        let head = raw::response_head(&mut recv).await;
        assert_eq!(head.get(2..4), Some(misdirected), "request {i}: a 421; HEADERS block {head:02x?}");
    }
    // The 33rd, sent at once, gets no answer: the connection closes instead.
    if let Ok((_send, mut recv)) = client.try_send_request(&[(":method", "GET"), (":path", "/")]).await {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, recv.read(&mut byte)).await.expect("an end within the wait");
        assert!(!matches!(read, Ok(Some(n)) if n > 0), "the 33rd request was answered: {read:?}");
    }
    tokio::time::timeout(WAIT, client.conn.closed()).await.expect("closed after the 32nd answer");
}

/// quinn keeps state for every stream a peer may open: a client gets credit for the streams a
/// session needs and a few more, not quinn's 100 + 100. The credit is granted in the handshake,
/// so an open beyond it cannot complete at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_open_only_the_streams_a_session_needs() {
    use futures_util::FutureExt;
    let server = TestServer::start().await;
    let client = raw::RawH3::connect(&server).await;
    assert!(client.conn.max_datagram_size().is_some(), "datagrams are allowed (browsers require them)");
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(client.conn.open_bi().now_or_never().expect("credit for 4 bidirectional streams").unwrap());
    }
    assert!(client.conn.open_bi().now_or_never().is_none(), "a fifth bidirectional stream was allowed");
    let mut uni = Vec::new();
    for _ in 0..8 {
        uni.push(client.conn.open_uni().now_or_never().expect("credit for 8 unidirectional streams").unwrap());
    }
    assert!(client.conn.open_uni().now_or_never().is_none(), "a ninth unidirectional stream was allowed");
}

/// QUIC connections count against the same caps as TCP sockets: one address gets its share
/// (here 2), a connection beyond is refused before its handshake, and a place comes back once a
/// connection ends. Past half the share, a connection must prove its source address (Retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_share_of_quic_connections_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |c| c.max_sockets_per_address = 2).await;
    let first = raw::RawH3::connect(&server).await;
    let _second = raw::RawH3::connect(&server).await;
    match raw::RawH3::try_connect(&server).await {
        Err(quinn::ConnectionError::ConnectionClosed(close)) => {
            assert_eq!(close.error_code, quinn::TransportErrorCode::CONNECTION_REFUSED)
        }
        Err(other) => panic!("expected CONNECTION_REFUSED, got {other:?}"),
        Ok(_) => panic!("a third connection from one address was accepted"),
    }
    assert!(server.metric("sockets_refused_total").await >= 1);
    // Past half the share, a connection proves its address first (a Retry, which the client
    // follows by itself): the second and the third did.
    assert!(server.metric("quic_retries_total").await >= 2, "no Retry past half the share");
    first.conn.close(0u32.into(), b"done");
    // The server counts the closed connection out when it reads the close: retry until then.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match raw::RawH3::try_connect(&server).await {
            Ok(_) => break,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no place came back: {e:?}"),
        }
        tokio::task::yield_now().await;
    }
}

/// h3 buffers a whole HTTP/3 frame before decoding it, whatever length it announces: a CONNECT
/// whose HEADERS frame never ends must not make the server hold what the client streams in
/// before anyone is authenticated. The connection is closed with H3_EXCESSIVE_LOAD instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_whose_headers_never_end_is_cut_before_the_server_holds_much() {
    let server = TestServer::start().await;
    let client = raw::RawH3::connect(&server).await;
    let _control = client.send_settings(&raw::WEBTRANSPORT_SETTINGS).await;
    let (mut send, _recv) = client.conn.open_bi().await.unwrap();
    let announced: u64 = 1 << 30; // a HEADERS frame of 1 GiB
    let mut head = vec![0x01];
    head.extend_from_slice(&(0xc000_0000_0000_0000 | announced).to_be_bytes());
    send.write_all(&head).await.unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let written = tokio::time::timeout(WAIT, async {
        let mut written = 0usize;
        while send.write_all(&chunk).await.is_ok() {
            written += chunk.len();
        }
        written
    })
    .await
    .expect("the server cut the connection within the wait");
    match client.conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(close.error_code, 0x107u32.into()),
        other => panic!("expected H3_EXCESSIVE_LOAD, got {other:?}"),
    }
    // What reached the server is bounded by its budget (64 KiB) and its receive window (512
    // KiB); the client may have queued a little more that never left it.
    let on_the_wire = client.conn.stats().udp_tx.bytes;
    assert!(on_the_wire < 2 << 20, "{on_the_wire} bytes went out before the cut ({written} written)");
}
