//! WebTransport over HTTP/3 at `/wt` (UDP): QUIC by quinn, HTTP/3 by h3, sessions by
//! h3-webtransport. The CONNECT request is authenticated **before** the session is accepted
//! (a `token` cookie from native clients, or a single-use `ticket` from browsers, which send no
//! cookies here; a ticket works only from the Origin that bought it, a cookie only from this
//! node's own origin or an allowed one); a refusal is a 401/403/503 answer on the request
//! stream.
//! The client then opens one bidirectional stream that carries length-prefixed frames
//! (PROTOCOL.md § 1.3) to the same connection driver as WebSocket.

use crate::auth;
use crate::conn::{self, Credentials, Inbound, Transport};
use crate::http::listener::{Admission, Limits};
use crate::node::Node;
use crate::transport::certs::Certificates;
use crate::wire::{CloseCode, MAX_CLIENT_FRAME, UserRef, decode_stream_frame, put_stream_frame, write_unsent};
use axum::http::{self, Method, Request, Response, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use h3::ext::Protocol;
use h3::server::RequestStream;
use h3_webtransport::server::{AcceptedBi, WebTransportSession};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The client must send its CONNECT this soon after the handshake, and open its stream this
/// soon after the session is accepted.
const STREAM_WAIT: Duration = Duration::from_secs(10);
/// How long a closing session waits for the peer to read the GoAway and hang up.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Read granularity of the stream buffer, which every waiting session holds: client frames are
/// small (as the WebSocket read buffer, 512 B; a larger frame is read in more calls).
const READ_CHUNK: usize = 512;

/// Streams a client may have open at once (see `endpoint`).
const WT_BIDI_STREAMS: u32 = 4;
const WT_UNI_STREAMS: u32 = 8;
/// Bytes a client may send on one stream before the server reads them: 16 client frames of the
/// largest size (the connection's window is twice this).
const WT_RECEIVE_WINDOW: u32 = 16 * MAX_CLIENT_FRAME as u32;
/// Bytes sent to a client and not yet acknowledged, at most: 5 MB/s at 100 ms round trip. A
/// client that stops reading fills it, then its queue, and is cut as slow (4001).
const WT_SEND_WINDOW: u64 = 512 * 1024;
/// Datagrams are not used (PROTOCOL.md § 1.4); one that arrives is held up to this many bytes,
/// which is also the largest the client may send.
const WT_DATAGRAM_BUFFER: usize = 1200;

type H3Conn = h3_quinn::Connection;
type WtStream = h3_webtransport::stream::BidiStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Builds the QUIC endpoint: TLS 1.3 only, ALPN `h3`, the swappable certificate.
pub(crate) fn endpoint(addr: std::net::SocketAddr, certs: Arc<Certificates>) -> Result<quinn::Endpoint, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = u32::MAX;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        Duration::from_secs(30).try_into().map_err(|e: quinn::VarIntBoundsExceeded| e.to_string())?,
    ));
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    // quinn keeps state for every stream a peer may open (100 + 100 by default: 6 KiB per
    // session, measured with heaptrack). A session needs 2 bidirectional streams (the CONNECT
    // and the session's stream) and 3 unidirectional ones (HTTP/3 control, QPACK encoder and
    // decoder); the rest is room for a client's reserved (grease) streams.
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(WT_BIDI_STREAMS));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(WT_UNI_STREAMS));
    // What one session may make the server hold, instead of quinn's defaults sized for bulk
    // transfer (1.25 MB per stream and no limit per connection received, 10 MB unacknowledged
    // sent, 1.25 MB of datagrams nobody here reads).
    transport.stream_receive_window(quinn::VarInt::from_u32(WT_RECEIVE_WINDOW));
    transport.receive_window(quinn::VarInt::from_u32(2 * WT_RECEIVE_WINDOW));
    transport.send_window(WT_SEND_WINDOW);
    transport.datagram_receive_buffer_size(Some(WT_DATAGRAM_BUFFER));
    config.transport_config(Arc::new(transport));
    quinn::Endpoint::server(config, addr).map_err(|e| e.to_string())
}

/// Accepts QUIC connections until the endpoint closes. They count against the same caps as
/// the TCP listener's sockets (in all, and per client address), on a count of their own: a
/// connection beyond is refused (QUIC `CONNECTION_REFUSED`) before its handshake.
pub(crate) async fn serve(node: Arc<Node>, endpoint: quinn::Endpoint, limits: Limits) {
    let admission = Admission::new(limits);
    while let Some(incoming) = endpoint.accept().await {
        let addr = incoming.remote_address().ip();
        // The source of a first QUIC packet can be forged (TCP's handshake proves it; QUIC's
        // Retry does). Unproven connections may fill only half of an address's share and half
        // of the cap: beyond, a client proves its address first (one more round trip), so
        // packets naming someone else's address cannot take all of that client's places.
        if !incoming.remote_address_validated() && incoming.may_retry() && admission.half_full(&node, addr) {
            node.metrics.quic_retries.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = incoming.retry() {
                tracing::debug!(error = %e, "QUIC Retry not sent");
            }
            continue;
        }
        let Some(admitted) = admission.admit(&node, addr, "QUIC connection") else {
            node.metrics.sockets_refused.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            // The handshake's state is large (HTTP/3 set-up, the CONNECT, authentication):
            // boxed, it is freed once the session runs instead of sizing the session's task.
            match Box::pin(session(node.clone(), incoming)).await {
                Ok(Some((transport, credentials, slot))) => {
                    conn::run(node, transport, credentials).await;
                    drop(slot);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "WebTransport connection ended"),
            }
            drop(admitted);
        });
    }
}

/// Why a CONNECT is refused: the status, a reason for the log, and whether a retry may succeed
/// shortly (`Retry-After: 1`: the store or the tickets could not be read).
type Refusal = (StatusCode, &'static str, bool);

/// Answers a CONNECT with an error status, then lingers so the answer is delivered before the
/// connection goes (a QUIC close drops data in flight).
async fn refuse(
    mut stream: RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    status: StatusCode,
    retry_soon: bool,
    quic: &quinn::Connection,
) {
    answer(&mut stream, status, retry_soon).await;
    let _ = tokio::time::timeout(CLOSE_LINGER, quic.closed()).await;
}

/// Answers a request with `status` and nothing else.
async fn answer(stream: &mut RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>, status: StatusCode, retry_soon: bool) {
    let response = Response::builder().status(status);
    let response = if retry_soon { response.header(http::header::RETRY_AFTER, "1") } else { response };
    if let Ok(response) = response.body(()) {
        let _ = stream.send_response(response).await;
        let _ = stream.finish().await;
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// Decides who a CONNECT request is, before any session exists.
async fn authorize(node: &Node, req: &Request<()>) -> Result<Credentials, Refusal> {
    let headers = req.headers();
    let origin = headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok());
    if let Some(ticket) = req.uri().query().and_then(|q| query_param(q, "ticket")) {
        // A ticket works only from the Origin of the page that bought it, and that page passed
        // the same-origin check over HTTP against the host it was served from (through a
        // proxy on port 443, say): its origin is the ticket's, not this node's own address.
        let grant = node.tickets.redeem(ticket, origin, Instant::now()).await.map_err(|e| {
            tracing::info!(error = %e, "WebTransport ticket refused");
            match e {
                crate::tickets::TicketError::Unavailable => {
                    (StatusCode::SERVICE_UNAVAILABLE, "tickets unavailable", true)
                }
                _ => (StatusCode::UNAUTHORIZED, "invalid ticket", false),
            }
        })?;
        return match node.store.is_revoked(&grant.token_id).await {
            Ok(false) => {
                Ok(Credentials { user: grant.user, token_id: grant.token_id, expires_at: grant.token_expires_at })
            }
            Ok(true) => Err((StatusCode::UNAUTHORIZED, "session revoked", false)),
            Err(_) => Err((StatusCode::SERVICE_UNAVAILABLE, "store unavailable", true)),
        };
    }
    // A cookie: the page that may connect is served by our TCP listener, same host as this
    // request, the HTTP port.
    let page = req.uri().authority().map(|a| format!("{}:{}", a.host(), node.http_port));
    if !auth::origin_allowed(origin, page.as_deref(), &node.allowed_origins) {
        return Err((StatusCode::FORBIDDEN, "origin not allowed", false));
    }
    let cookies: Vec<&str> = headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
    let headers_map = {
        let mut h = http::HeaderMap::new();
        if !cookies.is_empty()
            && let Ok(v) = http::HeaderValue::from_str(&cookies.join("; "))
        {
            h.insert(http::header::COOKIE, v);
        }
        h
    };
    let claims = crate::http::authenticate(node, &headers_map).await.map_err(|e| {
        if e.status() == StatusCode::SERVICE_UNAVAILABLE {
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable", true)
        } else {
            (StatusCode::UNAUTHORIZED, "not logged in", false)
        }
    })?;
    Ok(Credentials {
        user: UserRef { id: claims.user_id().unwrap_or_default(), username: claims.name.clone() },
        token_id: claims.jti,
        expires_at: claims.exp,
    })
}

/// A session ready to run: its transport, who it is, and its connection slot.
type Accepted = (WtTransport, Credentials, tokio::sync::OwnedSemaphorePermit);

type SetupResult = Result<Option<Accepted>, Box<dyn std::error::Error + Send + Sync>>;

/// The QUIC handshake, HTTP/3 and the CONNECT up to an accepted session with its stream, or
/// `None` when the connection was refused or went away.
async fn session(node: Arc<Node>, incoming: quinn::Incoming) -> SetupResult {
    // A handshake that stalls (a peer that went quiet, or a spoofed address that cannot
    // answer) gives its place back within the same wait as the CONNECT.
    let Ok(quic) = tokio::time::timeout(STREAM_WAIT, incoming).await else {
        return Ok(None);
    };
    let quic = quic?;
    match within_setup_budget(&quic, setup(node, quic.clone())).await {
        Some(result) => result,
        None => {
            tracing::warn!(
                peer = %quic.remote_address(),
                budget = SETUP_BYTES,
                "WebTransport connection closed: too much data before its session"
            );
            Ok(None)
        }
    }
}

/// Bytes a client may send before its session runs: its handshake, SETTINGS and CONNECT take
/// a few KiB. h3 buffers a whole HTTP/3 frame before it decodes it, whatever its announced
/// length, so without a budget one CONNECT stream (or control stream) could make the server
/// hold gigabytes before anyone is authenticated (seen: 27 MB in 8 s from one test client).
const SETUP_BYTES: u64 = 64 * 1024;
/// HTTP/3's code for a peer that generates excessive load (RFC 9114 § 8.1).
const H3_EXCESSIVE_LOAD: u32 = 0x107;

/// Runs `setup` while the connection has received at most `SETUP_BYTES`; past that, closes
/// the connection with H3_EXCESSIVE_LOAD and returns `None`. The count is read each time
/// `setup` is woken, which incoming data does, so what h3 can have read beyond the budget is
/// bounded by the connection's receive window.
async fn within_setup_budget<T>(quic: &quinn::Connection, setup: impl Future<Output = T>) -> Option<T> {
    let mut setup = std::pin::pin!(setup);
    std::future::poll_fn(|cx| {
        if quic.stats().udp_rx.bytes > SETUP_BYTES {
            // Closed here, while h3 is still alive: dropping it closes with H3_NO_ERROR first.
            quic.close(H3_EXCESSIVE_LOAD.into(), b"too much data before the session");
            return std::task::Poll::Ready(None);
        }
        setup.as_mut().poll(cx).map(Some)
    })
    .await
}

/// HTTP/3, the CONNECT and its authentication, up to the session's stream.
async fn setup(node: Arc<Node>, quic: quinn::Connection) -> SetupResult {
    let mut h3_conn: h3::server::Connection<H3Conn, Bytes> = h3::server::builder()
        .enable_webtransport(true)
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_webtransport_sessions(1)
        .send_grease(true)
        .build(h3_quinn::Connection::new(quic.clone()))
        .await?;
    // A QUIC connection that does not ask for a session soon is dropped (keep-alives would
    // otherwise hold it open forever).
    let request = tokio::time::timeout(STREAM_WAIT, async {
        match h3_conn.accept().await? {
            Some(resolver) => {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Some(resolver.resolve_request().await?))
            }
            None => Ok(None),
        }
    })
    .await;
    let (req, stream) = match request {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            quic.close(0u32.into(), b"no request");
            return Ok(None);
        }
    };
    let is_wt = req.method() == Method::CONNECT && req.extensions().get::<Protocol>() == Some(&Protocol::WEB_TRANSPORT);
    if !is_wt {
        tracing::info!(method = %req.method(), path = req.uri().path(), "HTTP/3 request other than a WebTransport CONNECT: 421");
        misdirected(h3_conn, stream, &quic).await;
        return Ok(None);
    }
    if req.uri().path() != "/wt" {
        refuse(stream, StatusCode::NOT_FOUND, false, &quic).await;
        return Ok(None);
    }
    let credentials = match authorize(&node, &req).await {
        Ok(credentials) => credentials,
        Err((status, why, retry_soon)) => {
            tracing::warn!(status = status.as_u16(), why, "WebTransport CONNECT refused");
            node.metrics.upgrades_refused.fetch_add(1, Ordering::Relaxed);
            refuse(stream, status, retry_soon, &quic).await;
            return Ok(None);
        }
    };
    if node.draining.load(Ordering::Relaxed) {
        refuse(stream, StatusCode::SERVICE_UNAVAILABLE, false, &quic).await;
        return Ok(None);
    }
    let Ok(slot) = node.connection_slots.clone().try_acquire_owned() else {
        refuse(stream, StatusCode::SERVICE_UNAVAILABLE, false, &quic).await;
        return Ok(None);
    };
    match tokio::time::timeout(STREAM_WAIT, client_settings(&mut h3_conn)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            tracing::info!("WebTransport CONNECT refused: the client sent no SETTINGS");
            refuse(stream, StatusCode::BAD_REQUEST, false, &quic).await;
            return Ok(None);
        }
    }
    let session = WebTransportSession::accept(req, stream, h3_conn).await?;
    let stream = match tokio::time::timeout(STREAM_WAIT, session.accept_bi()).await {
        Ok(Ok(Some(AcceptedBi::BidiStream(_, stream)))) => stream,
        _ => {
            quic.close(CloseCode::BadFrame.code().into(), b"expected one bidirectional stream");
            return Ok(None);
        }
    };
    let transport = WtTransport { stream, read: BytesMut::new(), write: Vec::new(), quic, _session: Box::new(session) };
    Ok(Some((transport, credentials, slot)))
}

/// Requests other than a WebTransport CONNECT answered `421` on one QUIC connection before
/// it is closed.
const MISDIRECTED_MAX: usize = 32;

/// Answers `421` to a request that is not a WebTransport CONNECT, and to each further request
/// on the connection until none has come for `CLOSE_LINGER` (or `MISDIRECTED_MAX` were
/// answered). The TCP listener's `Alt-Svc` names this listener for the whole origin, but only
/// sessions are served here: a 421 tells a client that followed it to drop the alternative and
/// lets it retry over TCP (RFC 7838 § 6), where a 400 would have been final. A browser sends a
/// page's requests side by side on one connection, so each gets its answer; the wait for the
/// next one also lets the last answer reach the client before the close.
async fn misdirected(
    mut h3_conn: h3::server::Connection<H3Conn, Bytes>,
    first: RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    quic: &quinn::Connection,
) {
    let mut stream = first;
    for _ in 1..MISDIRECTED_MAX {
        answer(&mut stream, StatusCode::MISDIRECTED_REQUEST, false).await;
        // The wait covers the request's headers too: a stream opened and left silent must not
        // hold the connection.
        let next = tokio::time::timeout(CLOSE_LINGER, async {
            match h3_conn.accept().await {
                Ok(Some(resolver)) => resolver.resolve_request().await.ok(),
                _ => None,
            }
        });
        stream = match next.await {
            Ok(Some((_, next))) => next,
            _ => return,
        };
    }
    answer(&mut stream, StatusCode::MISDIRECTED_REQUEST, false).await;
    let _ = tokio::time::timeout(CLOSE_LINGER, quic.closed()).await;
}

/// Waits for the client's SETTINGS, the first frame on its control stream. That stream is not
/// ordered with the CONNECT's: under load the CONNECT can be read first, and accepting it then
/// would find WebTransport "not supported by client" and close the connection (seen with 500
/// sessions opened at once against a node slowed by heaptrack). The WebTransport over HTTP/3
/// draft has the server wait for them.
/// h3 answers its own defaults, owned, until the peer's SETTINGS are in, and borrows them after.
async fn client_settings(conn: &mut h3::server::Connection<H3Conn, Bytes>) -> Result<(), h3::error::ConnectionError> {
    use h3::ConnectionState;
    while matches!(conn.inner.shared.settings(), std::borrow::Cow::Owned(_)) {
        std::future::poll_fn(|cx| conn.inner.poll_control(cx)).await?;
    }
    Ok(())
}

struct WtTransport {
    stream: WtStream,
    read: BytesMut,
    write: Vec<u8>,
    quic: quinn::Connection,
    /// Boxed: the session (HTTP/3 connection state) is large and held as it is for as long as
    /// the connection lives; inline, the connection's task would carry it more than once.
    _session: Box<WebTransportSession<H3Conn, Bytes>>,
}

impl Transport for WtTransport {
    /// No probe: nothing on a WebTransport stream is answered by the client's stack in order.
    /// QUIC's flow control windows bound what is in flight to the client instead.
    const PROBES: bool = false;

    async fn probe(&mut self, _nonce: [u8; 8]) -> Result<(), String> {
        Ok(())
    }

    async fn recv(&mut self) -> Inbound {
        loop {
            match decode_stream_frame(&self.read, MAX_CLIENT_FRAME) {
                Ok(Some((used, frame))) => {
                    let frame = Bytes::copy_from_slice(frame);
                    self.read.advance(used);
                    return Inbound::Frame(frame);
                }
                Ok(None) => {}
                Err(e) => return Inbound::Malformed(e),
            }
            self.read.reserve(READ_CHUNK);
            // The connection closing (the browser closed the session or the page) ends the
            // session even when the stream itself was left open.
            tokio::select! {
                read = self.stream.read_buf(&mut self.read) => match read {
                    Ok(0) => return Inbound::Closed(None),
                    Ok(_) => {}
                    Err(e) => return Inbound::Closed(Some(e.to_string())),
                },
                closed = self.quic.closed() => return Inbound::Closed(Some(closed.to_string())),
            }
        }
    }

    async fn feed(&mut self, frame: Bytes) -> Result<(), String> {
        put_stream_frame(&mut self.write, &frame);
        Ok(())
    }

    /// Cancel-safe: a flush given up (the write deadline, a slow-consumer cut) leaves what the
    /// stream did not take, and the goodbye's flush goes on from there, so no byte of a frame
    /// goes out twice.
    async fn flush(&mut self) -> Result<(), String> {
        if self.write.is_empty() {
            return Ok(());
        }
        write_unsent(&mut self.stream, &mut self.write).await.map_err(|e| e.to_string())?;
        // Its memory goes once written, as over WebSocket: an idle session keeps none of what
        // it was sent before.
        self.write = Vec::new();
        self.stream.flush().await.map_err(|e| e.to_string())
    }

    /// The stream's framing is ours and never yields `Inbound::Broken`; were it to, the session
    /// ends as for a bad frame.
    async fn abort(&mut self, reason: &str) {
        self.close(CloseCode::BadFrame, reason).await;
    }

    /// Within 1.75 × `CLOSE_LINGER` (the driver gives a close 2 s): the QUIC close with the code
    /// is made even when a client that stopped reading takes nothing more.
    async fn close(&mut self, code: CloseCode, reason: &str) {
        let _ = tokio::time::timeout(CLOSE_LINGER / 2, self.flush()).await;
        // A QUIC close drops stream data still in flight, GoAway included: end the stream,
        // give the peer a moment to read it and hang up itself, then close.
        let _ = tokio::time::timeout(CLOSE_LINGER / 4, self.stream.shutdown()).await;
        let _ = tokio::time::timeout(CLOSE_LINGER, self.quic.closed()).await;
        self.quic.close(code.code().into(), reason.as_bytes());
    }
}
