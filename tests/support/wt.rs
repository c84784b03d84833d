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
