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

/// Runs `socketchat-load` (the binary CI builds) with these arguments; it must exit 0, which
/// it does only when its own checks pass. Returns its JSON line.
async fn run_load(args: &[String]) -> serde_json::Value {
    let output = load_output(args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stdout} {stderr}");
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON line: {stdout}"));
    serde_json::from_str(line).unwrap()
}

/// Runs `socketchat-load` with these arguments, whatever its outcome (no database or secret
/// from the environment: everything it needs is in `args`).
async fn load_output(args: &[String]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_socketchat-load"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("JWT_SECRET")
        .kill_on_drop(true)
        .output()
        .await
        .expect("socketchat-load runs")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_connect_open_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), false).await;
    let (addr, pid) = (running.local_addr().to_string(), std::process::id().to_string());
    let idle = run_load(&strings(&["idle", "--addr", &addr, "--pid", &pid, "--connections", "20"])).await;
    assert_eq!(idle["connections"], 20, "{idle}");
    assert!(idle["kib_per_connection"].is_number(), "{idle}");
    let connect = run_load(&strings(&[
        "connect",
        "--addr",
        &addr,
        "--pid",
        &pid,
        "--jwt-secret",
        SECRET,
        "--connections",
        "40",
        "--users",
        "20",
    ]))
    .await;
    assert_eq!((connect["connections"].as_u64(), connect["users"].as_u64()), (Some(40), Some(20)), "{connect}");
    assert!(connect["connects_per_s"].as_f64().unwrap() > 0.0, "{connect}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_presence_latency_miss_nothing_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), false).await;
    let addr = running.local_addr().to_string();
    let relay = run_load(&strings(&[
        "relay",
        "--send-addr",
        &addr,
        "--recv-addr",
        &addr,
        "--senders",
        "2",
        "--receivers",
        "5",
        "--rate",
        "40",
        "--seconds",
        "1",
    ]))
    .await;
    assert!(relay["messages_sent"].as_u64().unwrap() > 0, "{relay}");
    assert_eq!(relay["missing"], 0, "{relay}");
    let presence = run_load(&strings(&[
        "presence-latency",
        "--watch-addr",
        &addr,
        "--move-addr",
        &addr,
        "--jwt-secret",
        SECRET,
        "--watchers",
        "5",
        "--churners",
        "2",
        "--moves",
        "2",
    ]))
    .await;
    assert_eq!((presence["samples"].as_u64(), presence["missing"].as_u64()), (Some(10), Some(0)), "{presence}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_acks_every_send_through_the_writer_and_alone() {
    for mode in ["group", "single"] {
        let store = run_load(&strings(&[
            "store",
            "--mode",
            mode,
            "--senders",
            "4",
            "--rooms",
            "2",
            "--seconds",
            "1",
            "--warmup",
            "0",
        ]))
        .await;
        assert!(store["acked_per_sec"].as_f64().unwrap() > 0.0, "{store}");
        assert_eq!(store["errors"], 0, "{store}");
    }
}

/// `connect --processes 2 --source A,B` spreads its connections over two processes and two
/// source addresses: 40 connections get through a server that takes 30 per address, which one
/// address alone would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_spreads_over_processes_and_source_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), false);
    config.max_sockets_per_address = 30;
    let running = server::start(config).await.expect("server starts");
    let (addr, pid) = (running.local_addr().to_string(), std::process::id().to_string());
    let base =
        ["connect", "--addr", &addr, "--pid", &pid, "--jwt-secret", SECRET, "--connections", "40", "--users", "40"];
    let spread =
        run_load(&strings(&[&base[..], &["--processes", "2", "--source", "127.0.0.1,127.0.0.2"]].concat())).await;
    assert_eq!((spread["connections"].as_u64(), spread["processes"].as_u64()), (Some(40), Some(2)), "{spread}");
    // The same from one address: the server's share of 30 stops it.
    let output = load_output(&strings(&base)).await;
    assert!(
        !output.status.success(),
        "40 connections from one address got through a share of 30: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    running.shutdown().await;
}
