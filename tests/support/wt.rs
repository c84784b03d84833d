//! A WebTransport client nobody here wrote (wtransport, on quinn) that pins the published
//! certificate hash as browsers do.

use super::{TestServer, WAIT};
use base64::Engine;
use socketchat::wire::{self, ClientFrame, ServerFrame};
use wtransport::endpoint::ConnectOptions;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint};

pub struct WtClient {
    _conn: wtransport::Connection,
    send: wtransport::SendStream,
    recv: wtransport::RecvStream,
    buf: Vec<u8>,
}

pub async fn transport_info(server: &TestServer) -> (String, [u8; 32]) {
    let info: serde_json::Value =
        server.http.get(server.url("/api/transport")).send().await.unwrap().json().await.unwrap();
    let url = info["webtransport"].as_str().expect("webtransport offered").to_owned();
    let hash = info["cert_hashes"][0]["value"].as_str().expect("a pinned hash");
    let hash: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(hash).unwrap().try_into().unwrap();
    (url, hash)
}

/// Opens a session (`query` appended to the /wt URL, extra request headers) and its stream.
pub async fn wt_connect(server: &TestServer, query: &str, headers: &[(&str, String)]) -> Result<WtClient, String> {
    let (url, hash) = transport_info(server).await;
    let config =
        ClientConfig::builder().with_bind_default().with_server_certificate_hashes([Sha256Digest::new(hash)]).build();
    let endpoint = Endpoint::client(config).unwrap();
    let mut options = ConnectOptions::builder(format!("{url}{query}"));
    for (k, v) in headers {
        options = options.add_header(*k, v.clone());
    }
    let conn = tokio::time::timeout(WAIT, endpoint.connect(options.build()))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    Ok(WtClient { _conn: conn, send, recv, buf: Vec::new() })
}

impl WtClient {
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_raw(&wire::encode_stream_frame(&wire::encode(frame))).await;
    }

    /// Next frame, or `None` when the stream or session ended.
    pub async fn next(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((used, frame)) = wire::decode_stream_frame(&self.buf, usize::MAX).unwrap() {
                let frame = wire::decode(frame, usize::MAX).expect("server frames decode");
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(WAIT, self.recv.read(&mut chunk)).await.expect("data within the wait") {
                Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    pub async fn recv_until<T>(&mut self, mut pick: impl FnMut(ServerFrame) -> Option<T>) -> T {
        loop {
            if let Some(found) = pick(self.next().await.expect("session open")) {
                return found;
            }
        }
    }

    /// Reads until the session ends; returns the GoAway code.
    pub async fn goaway(&mut self) -> Option<u16> {
        let mut code = None;
        while let Some(frame) = self.next().await {
            if let ServerFrame::GoAway(g) = frame {
                code = Some(g.code);
            }
        }
        code
    }

    pub async fn hello(&mut self) -> wire::Welcome {
        self.send(&ClientFrame::Hello(wire::Hello { version: wire::PROTOCOL_VERSION, client: "wt-test".into() })).await;
        self.recv_until(|f| match f {
            ServerFrame::Welcome(w) => Some(w),
            _ => None,
        })
        .await
    }
}

pub fn cookie(token: &str) -> (&'static str, String) {
    ("cookie", format!("token={token}"))
}

pub async fn ticket(server: &TestServer, token: &str, origin: Option<&str>) -> String {
    let mut request = server.http.post(server.url("/api/auth/ticket")).header("cookie", format!("token={token}"));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json::<serde_json::Value>().await.unwrap()["ticket"].as_str().unwrap().to_owned()
}

/// A hand-made HTTP/3 client on quinn, for what no client library lets a test choose: the
/// order in which the client's SETTINGS and its CONNECT reach the server.
pub mod raw {
    use super::super::{TestServer, WAIT};
    use sha2::Digest;
    use socketchat::wire::{self, ClientFrame, ServerFrame};
    use std::sync::Arc;

    /// Accepts exactly the certificate whose SHA-256 the server publishes, as browsers do with
    /// `serverCertificateHashes`; signatures are still checked.
    #[derive(Debug)]
    struct Pinned {
        hash: [u8; 32],
        provider: Arc<rustls::crypto::CryptoProvider>,
    }

    impl rustls::client::danger::ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &rustls::pki_types::CertificateDer<'_>,
            _intermediates: &[rustls::pki_types::CertificateDer<'_>],
            _server_name: &rustls::pki_types::ServerName<'_>,
            _ocsp_response: &[u8],
            _now: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            if sha2::Sha256::digest(end_entity.as_ref())[..] == self.hash[..] {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General("certificate hash does not match".into()))
            }
        }

        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &rustls::pki_types::CertificateDer<'_>,
            _dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.3 only".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    }

    fn varint(out: &mut Vec<u8>, v: u64) {
        match v {
            0..=0x3f => out.push(v as u8),
            0x40..=0x3fff => out.extend_from_slice(&(0x4000 | v as u16).to_be_bytes()),
            0x4000..=0x3fff_ffff => out.extend_from_slice(&(0x8000_0000 | v as u32).to_be_bytes()),
            _ => out.extend_from_slice(&(0xc000_0000_0000_0000 | v).to_be_bytes()),
        }
    }

    /// A QPACK prefixed integer (RFC 9204 § 4.1.1) whose first byte carries `flags`.
    fn prefixed(out: &mut Vec<u8>, flags: u8, bits: u32, v: usize) {
        let max = (1usize << bits) - 1;
        if v < max {
            out.push(flags | v as u8);
            return;
        }
        out.push(flags | max as u8);
        let mut rest = v - max;
        while rest >= 0x80 {
            out.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        out.push(rest as u8);
    }

    /// An HTTP/3 HEADERS frame whose fields are all literal, name and value (no table).
    fn headers_frame(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut block = vec![0, 0]; // Required Insert Count 0, Base 0
        for (name, value) in fields {
            prefixed(&mut block, 0x20, 3, name.len());
            block.extend_from_slice(name.as_bytes());
            prefixed(&mut block, 0, 7, value.len());
            block.extend_from_slice(value.as_bytes());
        }
        let mut frame = Vec::new();
        varint(&mut frame, 0x01);
        varint(&mut frame, block.len() as u64);
        frame.extend_from_slice(&block);
        frame
    }

    async fn read_varint(recv: &mut quinn::RecvStream) -> u64 {
        let mut first = [0u8; 1];
        recv.read_exact(&mut first).await.expect("a varint");
        let len = 1usize << (first[0] >> 6);
        let mut rest = vec![0u8; len - 1];
        recv.read_exact(&mut rest).await.expect("a varint");
        rest.iter().fold(u64::from(first[0] & 0x3f), |v, b| (v << 8) | u64::from(*b))
    }

    /// SETTINGS of a WebTransport client: extended CONNECT, HTTP datagrams, WebTransport.
    pub const WEBTRANSPORT_SETTINGS: [(u64, u64); 3] = [(0x08, 1), (0x33, 1), (0x2b60_3742, 1)];

    pub struct RawH3 {
        pub conn: quinn::Connection,
        authority: String,
        _endpoint: quinn::Endpoint,
    }

    impl RawH3 {
        /// A QUIC connection with ALPN h3 to the server's WebTransport address; nothing sent yet.
        pub async fn connect(server: &TestServer) -> Self {
            Self::try_connect(server).await.expect("handshake")
        }

        /// `connect`, with the handshake's failure as it came.
        pub async fn try_connect(server: &TestServer) -> Result<Self, quinn::ConnectionError> {
            let (url, hash) = super::transport_info(server).await;
            let authority = url.trim_start_matches("https://").split('/').next().unwrap().to_owned();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { hash, provider }))
                .with_no_client_auth();
            tls.alpn_protocols = vec![b"h3".to_vec()];
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
            let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let conn = tokio::time::timeout(WAIT, endpoint.connect(authority.parse().unwrap(), "localhost").unwrap())
                .await
                .expect("handshake within the wait")?;
            Ok(RawH3 { conn, authority, _endpoint: endpoint })
        }

        /// Opens the CONNECT stream and sends a WebTransport CONNECT for `/wt` with the cookie.
        pub async fn send_connect(&self, token: &str) -> (quinn::SendStream, quinn::RecvStream) {
            let cookie = format!("token={token}");
            self.send_request(&[
                (":method", "CONNECT"),
                (":protocol", "webtransport"),
                (":path", "/wt"),
                ("cookie", &cookie),
            ])
            .await
        }

        /// Opens a request stream and sends a HEADERS frame with `fields`, after the
        /// `:scheme` and `:authority` of the server; the stream stays open.
        pub async fn send_request(&self, fields: &[(&str, &str)]) -> (quinn::SendStream, quinn::RecvStream) {
            self.try_send_request(fields).await.expect("a request stream")
        }

        /// `send_request`, with the connection's failure as it came.
        pub async fn try_send_request(
            &self,
            fields: &[(&str, &str)],
        ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
            let (mut send, recv) = self.conn.open_bi().await.map_err(|e| e.to_string())?;
            let mut all = vec![(":scheme", "https"), (":authority", self.authority.as_str())];
            all.extend_from_slice(fields);
            send.write_all(&headers_frame(&all)).await.map_err(|e| e.to_string())?;
            Ok((send, recv))
        }

        /// Opens the control stream and sends SETTINGS with these (id, value) pairs.
        pub async fn send_settings(&self, pairs: &[(u64, u64)]) -> quinn::SendStream {
            let mut settings = Vec::new();
            for &(id, value) in pairs {
                varint(&mut settings, id);
                varint(&mut settings, value);
            }
            let mut control = vec![0x00]; // control stream
            varint(&mut control, 0x04); // SETTINGS
            varint(&mut control, settings.len() as u64);
            control.extend_from_slice(&settings);
            let mut send = self.conn.open_uni().await.unwrap();
            send.write_all(&control).await.unwrap();
            send
        }

        /// Opens the session's bidirectional stream (for the session on stream `session`).
        pub async fn open_session_stream(&self, session: u64) -> (quinn::SendStream, quinn::RecvStream) {
            let (mut send, recv) = self.conn.open_bi().await.unwrap();
            let mut header = Vec::new();
            varint(&mut header, 0x41);
            varint(&mut header, session);
            send.write_all(&header).await.unwrap();
            (send, recv)
        }
    }

    /// Reads frames on a request stream up to the response's HEADERS and returns their field
    /// block: its first field line (byte 2) is the status, indexed from QPACK's static table
    /// when it is there (`0xd9` = entry 25, `:status 200`; `0xdc` = entry 28, `:status 503`).
    pub async fn response_head(recv: &mut quinn::RecvStream) -> Vec<u8> {
        loop {
            let kind = tokio::time::timeout(WAIT, read_varint(recv)).await.expect("a response within the wait");
            let len = read_varint(recv).await as usize;
            let mut payload = vec![0u8; len];
            recv.read_exact(&mut payload).await.expect("the frame's payload");
            if kind == 0x01 {
                return payload;
            }
            // Anything else before the HEADERS is a reserved (grease) frame.
        }
    }

    /// Checks that the response on a request stream is `200`.
    pub async fn expect_ok_response(recv: &mut quinn::RecvStream) {
        let head = response_head(recv).await;
        assert_eq!(head.get(2), Some(&0xd9), "a 200 response; HEADERS block {head:02x?}");
    }

    /// Sends Hello on a session stream and returns the first frame the server answers with.
    pub async fn hello(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) -> ServerFrame {
        let hello = ClientFrame::Hello(wire::Hello { version: wire::PROTOCOL_VERSION, client: "raw-h3".into() });
        send.write_all(&wire::encode_stream_frame(&wire::encode(&hello))).await.unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some((_, frame)) = wire::decode_stream_frame(&buf, usize::MAX).unwrap() {
                return wire::decode(frame, usize::MAX).expect("server frames decode");
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(WAIT, recv.read(&mut chunk)).await.expect("data within the wait") {
                Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
                other => panic!("the session stream ended: {other:?}"),
            }
        }
    }
}
