//! A smoke pass of the message scenarios against the real server (embedded, in this process):
//! seconds and a handful of connections. It asserts what the scenarios check — no loss, no
//! duplicate, order, gap-free seqs — never their figures (CI machines are shared and noisy).

use socketchat::config::{Config, MaybeAddr};
use socketchat::server;
use socketchat_bench::fanout::{self, FanoutArgs, PersistArgs};
use socketchat_bench::peer::Peer;

const SECRET: &str = "a smoke-test secret long enough for HS256";

async fn start(dir: &std::path::Path, webtransport: bool) -> server::Running {
    server::start(config(dir, webtransport)).await.expect("server starts")
}

fn config(dir: &std::path::Path, webtransport: bool) -> Config {
    let mut config = Config::embedded("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    if !webtransport {
        config.wt_listen = MaybeAddr(None);
    }
    config.jwt_secret = Some(SECRET.into());
    config.auth_burst = 1000;
    config.room_creation_burst = 1000;
    config.send_burst = 10_000;
    config.send_rate_per_sec = 10_000;
    config
}

/// A run of seconds: 2 rooms × 6 members, 3 senders, 60 messages/s.
fn small_fanout(addr: std::net::SocketAddr) -> FanoutArgs {
    FanoutArgs {
        addr,
        recv_addr: None,
        jwt_secret: SECRET.into(),
        rooms: 2,
        members: 6,
        senders: 3,
        rate: 60,
        seconds: 2,
        parallel: 8,
        server_pid: None,
        backend_pid: Vec::new(),
        transport: "websocket".into(),
        peer: Peer::Socketchat,
        overload: false,
        json: false,
    }
}

async fn fanout_smoke(transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), transport == "webtransport").await;
    let args = FanoutArgs { transport: transport.into(), ..small_fanout(running.local_addr()) };
    let report = fanout::fanout(args).await.unwrap();
    assert!(report.acked > 0 && report.delivered > 0, "{report:?}");
    assert_eq!(report.acked, report.sent, "{report:?}");
    assert_eq!(report.expected, report.acked * 6, "{report:?}");
    assert!(report.correct(), "{report:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_message_once_in_order_to_every_member() {
    fanout_smoke("websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_webtransport_delivers_every_message_once_in_order() {
    fanout_smoke("webtransport").await;
}

/// One writer with room for one waiting send: at 6,000 sends/s some find it full and are
/// refused (shed). The run must still answer every send, and lose nothing at the receivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overload_run_answers_every_send_and_loses_nothing_at_receivers_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), false);
    (config.writers, config.store_queue) = (Some(1), 1);
    let running = server::start(config).await.expect("server starts");
    let args = FanoutArgs { rate: 6000, overload: true, ..small_fanout(running.local_addr()) };
    let report = fanout::fanout(args).await.unwrap();
    assert!(report.refused > 0, "some sends are shed: {report:?}");
    assert!(report.acked > 0 && report.correct(), "{report:?}");
    // The same figures without --overload are a failure.
    assert!(!fanout::FanoutReport { overload: false, ..report }.correct());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_acks_gap_free_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), false).await;
    let args = PersistArgs {
        addr: running.local_addr(),
        senders: 4,
        rooms: 2,
        seconds: 1,
        server_pid: None,
        backend_pid: Vec::new(),
        peer: Peer::Socketchat,
        jwt_secret: None,
        json: false,
    };
    let report = fanout::persist(args).await.unwrap();
    assert!(report.acked > 0, "{report:?}");
    assert_eq!((report.seq_errors, report.failed), (0, 0), "{report:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceiling_server_passes_the_same_checks() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ceiling = std::process::Command::new(env!("CARGO_BIN_EXE_socketchat-ceiling"))
        .arg(addr.to_string())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It prints once it listens.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(ceiling.stderr.take().unwrap()), &mut line).unwrap();
    assert!(line.contains("listening"), "{line}");
    let args = FanoutArgs { server_pid: Some(ceiling.id()), peer: Peer::Ceiling, ..small_fanout(addr) };
    let report = fanout::fanout(args).await;
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    let report = report.unwrap();
    assert!(report.acked > 0 && report.correct(), "{report:?}");
    assert_eq!(report.expected, report.acked * 6, "{report:?}");
}
